"""Turn a file into a stored document with chunks, as an upload does: read, normalize, chunk, save
in one transaction. The chunks then wait, with no embedding, for the batch embedder.

Saving is by name (`KnowledgeStore.save_document`), compared and stored in Unicode NFC: the same
name with the same chunks is the document already there ("unchanged"); the same name with other chunks
replaces it in place, keeping the unchanged chunks' vectors ("replaced"); `mode="new"` always adds a
document ("created")."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from modules.knowledge.chunking import DEFAULT_OPTIONS, ChunkingOptions, split_into_chunks
from modules.knowledge.decoding import decode_text
from modules.knowledge.errors import UnreadableDocumentError
from modules.knowledge.extract import TEXT_TYPES
from modules.stores.base import ChunkStore, KnowledgeStore, SavedDocument, SaveMode

__all__ = [
    "TEXT_TYPES",
    "IngestResult",
    "UnreadableDocumentError",
    "ingest_chunks",
    "ingest_file",
    "ingest_text",
    "knowledge_store",
    "read_text_file",
]


@dataclass(frozen=True)
class IngestResult:
    doc_id: str
    name: str
    chunks: int
    outcome: str = "created"  # created, replaced or unchanged
    kept: int = 0  # chunks whose text (and vector) stayed
    added: int = 0  # new chunks, waiting for an embedding
    removed: int = 0  # chunks of the earlier version that are gone


def knowledge_store(store: ChunkStore) -> KnowledgeStore:
    if not hasattr(store, "save_document"):
        raise TypeError(f"{type(store).__name__} does not support uploads")
    return store  # type: ignore[return-value]


def read_text_file(path: Path) -> str:
    if path.suffix.lower() not in TEXT_TYPES:
        raise UnreadableDocumentError(f"{path.name}: unsupported file type {path.suffix!r}")
    return decode_text(path.name, path.read_bytes())


class AmbiguousNameError(ValueError):
    """Several documents already have this name, so "replace" can't tell which one to replace."""


async def ingest_chunks(
    store: KnowledgeStore, name: str, doc_type: str, chunks: list[str], mode: SaveMode = "replace"
) -> IngestResult:
    name = unicodedata.normalize("NFC", name)  # one document per visible name, whatever OS sent it
    saved: SavedDocument = await store.save_document(name, doc_type, chunks, mode)
    if saved.outcome == "ambiguous" or saved.doc_id is None:
        raise AmbiguousNameError(
            f"{name}: several documents already have this name, so it is not clear which one to replace; "
            "delete the extra ones (DELETE /knowledge/documents/{id}), or upload with ?mode=new to add another"
        )
    return IngestResult(saved.doc_id, name, len(chunks), saved.outcome, saved.kept, saved.added, saved.removed)


async def ingest_text(
    store: KnowledgeStore,
    name: str,
    doc_type: str,
    text: str,
    options: ChunkingOptions = DEFAULT_OPTIONS,
    mode: SaveMode = "replace",
) -> IngestResult:
    chunks = split_into_chunks(text, options)
    if not chunks:
        raise UnreadableDocumentError(f"{name}: the document has no text")
    return await ingest_chunks(store, name, doc_type, chunks, mode)


async def ingest_file(store: KnowledgeStore, path: Path, options: ChunkingOptions = DEFAULT_OPTIONS) -> IngestResult:
    return await ingest_text(store, path.name, TEXT_TYPES[path.suffix.lower()], read_text_file(path), options)
