"""Text out of uploaded files, within the upload limits: .txt and .md in the encodings a Japanese
office uses (decoding.py), .pdf through pypdf (page count checked before any page is read), .docx
through a zip- and XML-bomb-proof reader (docx_text.py).

A file that can't be read raises UnreadableDocumentError; one over a limit DocumentTooLargeError,
naming the setting. Either way nothing is stored. This runs in a worker process (isolation.py), so a
slow or hostile file never holds up the event loop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from modules.knowledge.decoding import decode_text
from modules.knowledge.docx_text import docx_text
from modules.knowledge.errors import DocumentTooLargeError, UnreadableDocumentError, UnsupportedTypeError

TEXT_TYPES = {".txt": "txt", ".md": "md", ".markdown": "md"}
SUPPORTED_TYPES = {**TEXT_TYPES, ".pdf": "pdf", ".docx": "docx"}


@dataclass(frozen=True)
class UploadLimits:
    """The upload limits (settings UPLOAD_MAX_DOCX_BYTES, UPLOAD_MAX_PDF_PAGES, UPLOAD_MAX_CHARS,
    UPLOAD_MAX_CHUNKS); the defaults are the settings' defaults."""

    max_docx_bytes: int = 100_000_000
    max_pdf_pages: int = 2_000
    max_chars: int = 2_000_000
    max_chunks: int = 10_000


def document_type(filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix not in SUPPORTED_TYPES:
        allowed = ", ".join(sorted(SUPPORTED_TYPES))
        raise UnsupportedTypeError(f"{filename}: unsupported file type {suffix or '(none)'!r}; use {allowed}")
    return SUPPORTED_TYPES[suffix]


def extract_text(filename: str, data: bytes, limits: UploadLimits | None = None) -> tuple[str, str]:
    """(document type, text) of an uploaded file."""
    limits = limits or UploadLimits()
    doc_type = document_type(filename)
    if doc_type == "pdf":
        text = pdf_text(filename, data, max_pages=limits.max_pdf_pages, max_chars=limits.max_chars)
    elif doc_type == "docx":
        text = docx_text(filename, data, max_bytes=limits.max_docx_bytes, max_chars=limits.max_chars)
    else:
        text = decode_text(filename, data)
        check_chars(filename, len(text), limits.max_chars)
    if not text.strip():
        raise UnreadableDocumentError(f"{filename}: no text could be read from the file")
    return doc_type, text


def check_chars(filename: str, chars: int, limit: int) -> None:
    if chars > limit:
        raise DocumentTooLargeError(
            f"{filename}: more than {limit:,} characters of text (UPLOAD_MAX_CHARS)", "UPLOAD_MAX_CHARS"
        )


def pdf_text(filename: str, data: bytes, *, max_pages: int, max_chars: int) -> str:
    """Every page's text, pages separated by a blank line. The page count the file declares is checked
    before its page tree is walked, and the walked count before any text is extracted."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not _decrypts_without_password(reader):
            raise UnreadableDocumentError(f"{filename}: the PDF is protected by a password; upload it unprotected")
        _check_pages(filename, _declared_pages(reader), max_pages)
        pages = reader.pages
        _check_pages(filename, len(pages), max_pages)
        parts: list[str] = []
        chars = 0
        for page in pages:
            text = page.extract_text() or ""
            chars += len(text) + 2
            check_chars(filename, chars, max_chars)
            parts.append(text)
    except UnreadableDocumentError:
        raise
    except RecursionError:
        raise UnreadableDocumentError(f"{filename}: not a readable PDF (its objects nest without end)") from None
    except Exception as exc:  # pypdf raises many kinds on a broken file; every one means "unreadable"
        raise UnreadableDocumentError(f"{filename}: not a readable PDF ({_said(exc)})") from None
    return "\n\n".join(parts)


def _decrypts_without_password(reader: Any) -> bool:
    try:
        return bool(reader.decrypt(""))
    except Exception:  # no crypto backend, or an unknown scheme
        return False


def _declared_pages(reader: Any) -> int:
    try:
        return int(reader.trailer["/Root"]["/Pages"]["/Count"])
    except (KeyError, TypeError, ValueError):
        return 0


def _check_pages(filename: str, pages: int, limit: int) -> None:
    if pages > limit:
        raise DocumentTooLargeError(
            f"{filename}: {pages:,} pages, more than the limit of {limit:,} (UPLOAD_MAX_PDF_PAGES)",
            "UPLOAD_MAX_PDF_PAGES",
        )


def _said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
