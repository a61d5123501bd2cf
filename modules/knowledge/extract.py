"""Text out of uploaded files: .txt and .md as UTF-8, .pdf through pypdf, .docx through python-docx.
A file that can't be read raises UnreadableDocumentError, so nothing is stored for it."""

from __future__ import annotations

import io
from pathlib import PurePath

from modules.knowledge.ingest import TEXT_TYPES, UnreadableDocumentError

SUPPORTED_TYPES = {**TEXT_TYPES, ".pdf": "pdf", ".docx": "docx"}


def document_type(filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix not in SUPPORTED_TYPES:
        allowed = ", ".join(sorted(SUPPORTED_TYPES))
        raise UnreadableDocumentError(f"{filename}: unsupported file type {suffix or '(none)'!r}; use {allowed}")
    return SUPPORTED_TYPES[suffix]


def extract_text(filename: str, data: bytes) -> tuple[str, str]:
    """(document type, text) of an uploaded file."""
    doc_type = document_type(filename)
    if doc_type == "pdf":
        text = _pdf_text(filename, data)
    elif doc_type == "docx":
        text = _docx_text(filename, data)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UnreadableDocumentError(f"{filename}: not UTF-8 text ({exc.reason})") from None
    if not text.strip():
        raise UnreadableDocumentError(f"{filename}: no text could be read from the file")
    return doc_type, text


def _pdf_text(filename: str, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocumentError(f"{filename}: not a readable PDF ({type(exc).__name__})") from None
    return "\n\n".join(pages)


def _docx_text(filename: str, data: bytes) -> str:
    import zipfile

    from docx import Document

    try:
        document = Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise UnreadableDocumentError(f"{filename}: not a readable .docx ({type(exc).__name__})") from None
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(parts)
