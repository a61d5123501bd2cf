"""The ChunkStore port: the database as a work queue of chunks waiting for an embedding.

Queue semantics (claim with a lease, complete, fail, status) live in SQL functions shared by every
adapter; adapters only move arguments and rows across the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt


class ClaimMode(StrEnum):
    PENDING = "pending"  # never embedded and not recorded failed
    FAILED = "failed"  # recorded failed by an earlier run (--retry-only)


@dataclass(frozen=True)
class Chunk:
    """A claimed chunk: leased to this worker until `lease_seconds` pass."""

    id: str
    doc_id: str
    chunk_index: int
    content: str
    title: str | None
    attempts: int


@dataclass(frozen=True)
class Completed:
    chunk_id: str
    vector: npt.NDArray[np.float32]
    content_hash: str  # sha256 of the text that was embedded; the write is skipped if the chunk changed since
    cache_key: str | None = None  # where the vector is cached for identical text (None: not cached)


@dataclass(frozen=True)
class CompleteResult:
    written: int  # vectors stored (the chunk was still ours and unchanged)
    changed: int  # chunks edited while in flight: released, pending again with their new text


@dataclass(frozen=True)
class Failure:
    chunk_id: str
    error: str


@dataclass(frozen=True)
class LeaseOwner:
    """A worker holding leases now (worker names are host:pid:random, see engine/workers.py)."""

    owner: str
    chunks: int
    expires_at: datetime | None


@dataclass(frozen=True)
class QueueStatus:
    total: int
    embedded: int
    pending: int
    failed: int
    in_progress: int
    stale_leases: int
    other_model: int = 0  # embedded by another model than the configured one (inside `embedded`)

    @property
    def percent_embedded(self) -> float:
        return 100.0 * self.embedded / self.total if self.total else 100.0


@dataclass(frozen=True)
class CacheStats:
    entries: int
    hits: int


@dataclass(frozen=True)
class TextToEmbed:
    """The chunks without a vector (pending, failed or in flight) and their tokens, estimated by the
    local rule of `modules.text.estimate_tokens` (for a cost estimate)."""

    chunks: int
    tokens: int


@dataclass(frozen=True)
class DocumentStatus:
    doc_id: str
    name: str | None
    total: int
    embedded: int
    pending: int
    failed: int
    in_progress: int


@dataclass(frozen=True)
class ErrorGroup:
    error: str
    chunks: int
    last_seen: datetime | None


@dataclass(frozen=True)
class ColumnInfo:
    """What the database says about the vector column, checked against the settings at start."""

    dimensions: int | None  # None: the column has no declared dimension
    id_type: str
    doc_id_type: str


@dataclass(frozen=True)
class RepairRow:
    """One document's repair needs (see repair.sql, embq_repair_report)."""

    doc_id: str
    name: str | None
    missing: int  # no vector and not leased live; includes `failed`
    expired_leases: int
    wrong_model: int
    wrong_dimension: int
    degenerate: int  # vectors of zero, overflowing or underflowing norm
    failed: int
    to_reset: int  # vectors a repair would clear: wrong model, dimension or norm, counted once


@dataclass(frozen=True)
class RepairResult:
    """What one repair did, in one transaction (see repair.sql, embq_repair_apply)."""

    released_leases: int
    wrong_model: int
    wrong_dimension: int
    degenerate: int
    reset: int  # vectors cleared (wrong model, dimension or norm, counted once), now pending again


@dataclass
class ClaimFilter:
    mode: ClaimMode = ClaimMode.PENDING
    doc_id: str | None = None
    failed_before: datetime | None = None  # FAILED mode: only failures older than the run's start
    dead_owners: tuple[str, ...] = ()  # workers known dead: their leases count as expired


class ChunkStore(Protocol):
    async def prepare(self) -> ColumnInfo:
        """Bring the schema to the current version (where allowed) and describe the vector column."""
        ...

    async def claim(self, worker: str, limit: int, lease_seconds: int, where: ClaimFilter) -> list[Chunk]: ...

    async def complete(self, worker: str, model_id: str, results: Sequence[Completed]) -> CompleteResult:
        """Store vectors, mark done and release, in one transaction, for chunks `worker` still holds; a
        chunk edited since it was claimed is released instead."""
        ...

    async def fail(self, worker: str, failures: Sequence[Failure]) -> int:
        """Record each chunk's own failure (attempts + 1, reason, time) and release it; returns how many
        were recorded (only chunks `worker` still holds)."""
        ...

    async def renew_leases(self, worker: str, chunk_ids: Sequence[str], lease_seconds: int) -> set[str]:
        """The heartbeat: extend the leases `worker` still holds; returns their ids."""
        ...

    async def lease_owners(self) -> list[LeaseOwner]: ...

    async def cached_vectors(self, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """Vectors already made for these cache keys (identical text, model, dimension, task, title)."""
        ...

    async def cache_stats(self) -> CacheStats: ...

    async def text_to_embed(self, doc_id: str | None = None) -> TextToEmbed | None:
        """What is left to embed (all chunks, or one document's) and its estimated tokens; None when
        the store can't tell without reading every text over the network."""
        ...

    async def release(self, worker: str, chunk_ids: Sequence[str]) -> None:
        """Give chunks back untouched (shutdown, quota): no attempt is charged."""
        ...

    async def status(
        self, doc_id: str | None = None, *, model_id: str | None = None, dead_owners: Sequence[str] = ()
    ) -> QueueStatus:
        """Exact counts; with `model_id`, also the vectors of another model; leases of `dead_owners`
        count as stale."""
        ...

    async def status_by_document(self, limit: int = 50) -> list[DocumentStatus]: ...

    async def recent_errors(self, limit: int = 10) -> list[ErrorGroup]: ...

    async def document_exists(self, doc_id: str) -> bool: ...

    async def document_name(self, doc_id: str) -> str | None: ...

    async def server_time(self) -> datetime: ...

    async def queue_columns(self) -> dict[str, str]:
        """The queue's own columns and their types, as the database has them."""
        ...

    async def repair_report(
        self, model_id: str, dimensions: int, doc_id: str | None = None, dead_owners: Sequence[str] = ()
    ) -> list[RepairRow]:
        """Per document: what is missing, leased by a dead worker, or embedded wrongly (model, dimension, norm)."""
        ...

    async def repair_apply(
        self,
        model_id: str,
        dimensions: int,
        doc_id: str | None = None,
        limit: int | None = None,
        dead_owners: Sequence[str] = (),
    ) -> RepairResult:
        """Clear dead leases and reset (at most `limit`) wrong vectors to pending, in one transaction."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class DocumentSummary:
    doc_id: str
    name: str | None
    type: str | None
    chunks: int
    embedded: int
    failed: int


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    doc_id: str
    name: str | None
    chunk_index: int
    content: str
    distance: float

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance


class KnowledgeStore(Protocol):
    """The upload side: documents in, chunks out, vectors searched."""

    async def ingest_document(self, name: str, doc_type: str, chunks: Sequence[str], doc_id: str | None = None) -> str:
        """Save a document and its chunks in one transaction; returns the document id."""
        ...

    async def list_documents(self, limit: int = 100) -> list[DocumentSummary]: ...

    async def delete_document(self, doc_id: str) -> int | None:
        """Chunks removed, or None when there is no such document."""
        ...

    async def search(self, query: npt.NDArray[np.float32], limit: int = 5) -> list[SearchHit]: ...
