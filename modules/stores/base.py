"""The ChunkStore port: the database as a work queue of chunks waiting for an embedding.

Queue semantics (claim with a lease, complete, fail, status) live in SQL functions shared by every
adapter; adapters only move arguments and rows across the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt


class ClaimMode(StrEnum):
    PENDING = "pending"  # never embedded and not recorded failed
    FAILED = "failed"  # recorded failed by an earlier run (--retry-only)
    DUE = "due"  # --watch: pending, then failed chunks whose cooldown has passed, not quarantined (schema v5)


@dataclass(frozen=True)
class RetryRule:
    """When a watcher retries a failed chunk by itself (schema version 6, operations.sql): `cooldown_base`
    seconds after its first failure, doubling after each, at most `cooldown_max`; once it has failed
    `max_attempts` times it is quarantined (only --retry-only takes it)."""

    max_attempts: int = 5
    cooldown_base: float = 60.0
    cooldown_max: float = 3600.0

    def cooldown(self, attempts: int) -> float:
        """Seconds a chunk that has failed `attempts` times waits before its next automatic retry."""
        return min(self.cooldown_max, self.cooldown_base * 2.0 ** min(max(attempts, 1) - 1, 60))

    def params(self) -> dict[str, float | int]:
        return {
            "max_attempts": self.max_attempts,
            "cooldown_base": self.cooldown_base,
            "cooldown_max": self.cooldown_max,
        }


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
    # Schema version 6 (embq_status_v3), under the RetryRule asked for: cooling_down + quarantined = failed.
    cooling_down: int = 0  # failed fewer than max_attempts times: a watcher retries them after their cooldown
    retry_due: int = 0  # of those, the ones whose cooldown has passed
    quarantined: int = 0  # failed max_attempts times or more: only --retry-only takes them
    oldest_pending_age_seconds: float | None = None  # the oldest chunk waiting for a vector (pending or in progress)
    next_retry_at: datetime | None = None  # when the next cooled-down retry is due

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
    stale: int  # vectors of a text edited since (its hash no longer matches)
    failed: int
    to_reset: int  # vectors a repair would clear: wrong model, dimension, norm or text, counted once


@dataclass(frozen=True)
class RepairResult:
    """What one repair did, in one transaction (see repair.sql, embq_repair_apply)."""

    released_leases: int
    wrong_model: int
    wrong_dimension: int
    degenerate: int
    stale: int
    reset: int  # vectors cleared (wrong model, dimension, norm or text, counted once), now pending again


@dataclass(frozen=True)
class BatchJob:
    """A Batch API job as the database tracks it (see sql/batch.sql). Its chunks are leased to
    'batch:<id>'; `chunk_ids` and `content_hashes` are in the order the requests were sent."""

    id: str
    name: str | None  # Google's batches/..., once the API accepted the job
    model: str  # the model id the vectors are recorded under
    state: str  # claimed | submitting | submitted | done
    target: str  # "live": the vector column; "next": a model migration's shadow column
    remote_state: str | None
    chunk_ids: tuple[str, ...]
    content_hashes: tuple[str, ...]
    cache_keys: tuple[str | None, ...]
    tokens: int | None
    created_at: datetime
    submitted_at: datetime | None


@dataclass(frozen=True)
class BatchJobSummary:
    """A job as --status shows it."""

    id: str
    name: str | None
    model: str
    target: str  # "live" or "next" (a model migration's)
    state: str
    remote_state: str | None
    outcome: str | None  # ingested | failed | expired | cancelled | abandoned (when done)
    chunks: int
    tokens: int | None
    embedded: int | None
    failed: int | None
    released: int | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class ModelMigrationRow:
    """A model migration as the database records it (see sql/model_migration.sql)."""

    id: str
    source_model: str | None  # the model the column held when it began (None: not recorded)
    target_model: str  # the model id its vectors are made with, e.g. gemini-embedding-2@768
    state: str  # filling | cut_over | aborted
    started_at: datetime
    seeded_at: datetime | None  # every chunk there was at the start is in the shadow queue
    cut_over_at: datetime | None
    ended_at: datetime | None
    agreement: float | None  # share of sampled chunks whose nearest neighbour stayed in the new top 5
    agreement_sample: int | None
    note: str | None


@dataclass
class ClaimFilter:
    mode: ClaimMode = ClaimMode.PENDING
    doc_id: str | None = None
    failed_before: datetime | None = None  # FAILED mode: only failures older than the run's start
    dead_owners: tuple[str, ...] = ()  # workers known dead: their leases count as expired
    retry: RetryRule = field(default_factory=RetryRule)  # DUE mode: which failed chunks are due
    model_id: str | None = None  # the claimer's model: a model migration's shadow queue refuses another


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
        self,
        doc_id: str | None = None,
        *,
        model_id: str | None = None,
        dead_owners: Sequence[str] = (),
        retry: RetryRule | None = None,
    ) -> QueueStatus:
        """Exact counts; with `model_id`, also the vectors of another model; leases of `dead_owners`
        count as stale; failed chunks split into cooling down and quarantined by `retry` (default RetryRule())."""
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

    # --- the Batch API route (sql/batch.sql) ------------------------------------------------------

    async def batch_claim(self, job_id: str, model_id: str, worker: str, limit: int, where: ClaimFilter) -> list[Chunk]:
        """Create the job's row and lease up to `limit` chunks to it, in one transaction."""
        ...

    async def batch_prepared(
        self,
        job_id: str,
        chunk_ids: Sequence[str],
        content_hashes: Sequence[str],
        cache_keys: Sequence[str | None],
        tokens: int,
    ) -> None: ...

    async def batch_submitted(self, job_id: str, name: str, remote_state: str | None) -> bool:
        """Record the API's name for the job; False when the job was closed meanwhile (cancel it)."""
        ...

    async def batch_take(
        self, worker: str, lease_seconds: int, limit: int, dead_owners: Sequence[str] = ()
    ) -> list[BatchJob]:
        """Lease the unfinished jobs no live run is tracking (those of `dead_owners` included)."""
        ...

    async def batch_seen(self, job_id: str, worker: str, remote_state: str | None) -> None: ...

    async def batch_finish(
        self, job_id: str, outcome: str, embedded: int, failed: int, error: str | None = None
    ) -> int:
        """End a job: its chunks not written go back to pending; returns how many."""
        ...

    async def batch_jobs(self, recent: int = 10) -> list[BatchJobSummary]: ...

    async def batch_workers(self) -> list[str]:
        """Workers tracking a job now (live job leases)."""
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

    # --- model migration (see sql/model_migration.sql) ---

    async def live_model(self) -> str | None:
        """The model the vector column holds since the last cut-over (None: never cut over)."""
        ...

    async def migration_current(self) -> ModelMigrationRow | None:
        """The model migration that fills, else the last one; None if there never was one."""
        ...

    async def migration_remaining_chars(self) -> int:
        """Characters of text not yet embedded with the filling migration's model."""
        ...

    def shadow(self) -> ChunkStore:
        """The same store over the filling migration's shadow queue: claim, complete, fail, release,
        renew_leases, lease_owners, status and batch_claim act on the new model's columns. Raises
        MigrationError where migrations are not supported (the Supabase REST path)."""
        ...

    async def table_access(self) -> list[TableAccess]:
        """Whether Supabase's API roles (anon, authenticated) can read the host tables (see security.sql)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class TableAccess:
    """What one API role may do with one host table (embq_table_access); no rows without the role."""

    table: str
    role: str
    can_select: bool  # the role holds SELECT on the table
    row_security: bool  # row-level security is on
    policies: int  # policies that let the role (or PUBLIC) read rows

    @property
    def readable(self) -> bool:
        """The role can read rows: it holds SELECT, and RLS is off or a policy lets it read."""
        return self.can_select and (not self.row_security or self.policies > 0)


SaveMode = Literal["replace", "new"]


@dataclass(frozen=True)
class SavedDocument:
    """What saving an upload did (embq_ingest_document_v2)."""

    doc_id: str | None  # None when outcome is "ambiguous"
    outcome: str  # created, replaced, unchanged, or ambiguous (several documents have the name)
    kept: int
    added: int
    removed: int


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
    model: str | None = None  # the model that made the hit's vector, as recorded

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance


class KnowledgeStore(Protocol):
    """The upload side: documents in, chunks out, vectors searched."""

    async def ingest_document(self, name: str, doc_type: str, chunks: Sequence[str], doc_id: str | None = None) -> str:
        """Save a new document and its chunks in one transaction; returns the document id."""
        ...

    async def save_document(
        self, name: str, doc_type: str, chunks: Sequence[str], mode: SaveMode = "replace"
    ) -> SavedDocument:
        """Save an upload by name, in one transaction: with "replace", the same chunks as a document of
        that name is that document (unchanged), other chunks replace it (unchanged chunks keep their
        vectors, new ones wait to be embedded, removed ones go); "new" always adds a document.
        Concurrent saves of one name are serialized, so they end as one document."""
        ...

    async def list_documents(self, limit: int = 100) -> list[DocumentSummary]: ...

    async def delete_document(self, doc_id: str) -> int | None:
        """Chunks removed, or None when there is no such document."""
        ...

    async def search(
        self, query: npt.NDArray[np.float32], limit: int = 5, *, model_id: str | None = None
    ) -> list[SearchHit]:
        """The nearest chunks by cosine distance, each text once (the nearest copy), never a chunk twice.
        With `model_id` (the model that embedded the query), raises LiveModelChangedError instead of
        comparing when the column holds another model's vectors since a cut-over."""
        ...
