"""An upload turned into what is stored: the file's text extracted within the limits, normalized and
cut into chunks. Pure and synchronous; the API runs it in a worker process (isolation.py)."""

from __future__ import annotations

from dataclasses import dataclass

from modules.knowledge.chunking import DEFAULT_OPTIONS, ChunkingOptions, split_into_chunks
from modules.knowledge.errors import DocumentTooLargeError, UnreadableDocumentError
from modules.knowledge.extract import UploadLimits, extract_text


@dataclass(frozen=True)
class PreparedDocument:
    doc_type: str
    chunks: list[str]
    chars: int  # characters of extracted text


def prepare_document(
    filename: str, data: bytes, limits: UploadLimits | None = None, options: ChunkingOptions = DEFAULT_OPTIONS
) -> PreparedDocument:
    limits = limits or UploadLimits()
    doc_type, text = extract_text(filename, data, limits)
    chunks = split_into_chunks(text, options)
    if not chunks:
        raise UnreadableDocumentError(f"{filename}: the document has no text")
    if len(chunks) > limits.max_chunks:
        raise DocumentTooLargeError(
            f"{filename}: {len(chunks):,} chunks, more than the limit of {limits.max_chunks:,} per document "
            "(UPLOAD_MAX_CHUNKS)",
            "UPLOAD_MAX_CHUNKS",
        )
    return PreparedDocument(doc_type, chunks, len(text))
