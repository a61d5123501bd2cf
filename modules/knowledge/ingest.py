"""Turn a file into a stored document with chunks, as an upload does: read, normalize, chunk, save
in one transaction. The chunks then wait, with no embedding, for the batch embedder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modules.knowledge.chunking import DEFAULT_OPTIONS, ChunkingOptions, normalize_text, split_into_chunks
from modules.knowledge.decoding import decode_text
from modules.knowledge.errors import UnreadableDocumentError
from modules.knowledge.extract import TEXT_TYPES
from modules.stores.base import ChunkStore, KnowledgeStore

__all__ = ["TEXT_TYPES", "IngestResult", "UnreadableDocumentError", "ingest_file", "ingest_text", "knowledge_store"]


@dataclass(frozen=True)
class IngestResult:
    doc_id: str
    name: str
    chunks: int


def knowledge_store(store: ChunkStore) -> KnowledgeStore:
    if not hasattr(store, "ingest_document"):
        raise TypeError(f"{type(store).__name__} does not support uploads")
    return store  # type: ignore[return-value]


def read_text_file(path: Path) -> str:
    if path.suffix.lower() not in TEXT_TYPES:
        raise UnreadableDocumentError(f"{path.name}: unsupported file type {path.suffix!r}")
    return decode_text(path.name, path.read_bytes())


async def ingest_text(
    store: KnowledgeStore, name: str, doc_type: str, text: str, options: ChunkingOptions = DEFAULT_OPTIONS
) -> IngestResult:
    chunks = split_into_chunks(normalize_text(text), options)
    if not chunks:
        raise UnreadableDocumentError(f"{name}: the document has no text")
    doc_id = await store.ingest_document(name, doc_type, chunks)
    return IngestResult(doc_id, name, len(chunks))


async def ingest_file(store: KnowledgeStore, path: Path, options: ChunkingOptions = DEFAULT_OPTIONS) -> IngestResult:
    return await ingest_text(store, path.name, TEXT_TYPES[path.suffix.lower()], read_text_file(path), options)
