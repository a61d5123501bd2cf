"""Rows of the queue's functions turned into the port's types, the same for both stores (psycopg gives
Python values; PostgREST gives JSON, converted here too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modules.stores.base import BatchJob, BatchJobSummary, ModelMigrationRow


def timestamp(value: Any) -> datetime | None:
    """A timestamptz as psycopg gives it (datetime) or PostgREST does (ISO 8601 text)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def batch_job(row: dict[str, Any]) -> BatchJob:
    created = timestamp(row["created_at"])
    assert created is not None
    return BatchJob(
        id=str(row["id"]),
        name=row["name"],
        model=str(row["model"]),
        state=str(row["state"]),
        target=str(row["target"]),
        remote_state=row["remote_state"],
        chunk_ids=tuple(str(v) for v in row["chunk_ids"] or ()),
        content_hashes=tuple(str(v) for v in row["content_hashes"] or ()),
        cache_keys=tuple(None if v is None else str(v) for v in row["cache_keys"] or ()),
        tokens=None if row["tokens"] is None else int(row["tokens"]),
        created_at=created,
        submitted_at=timestamp(row["submitted_at"]),
    )


def batch_job_summary(row: dict[str, Any]) -> BatchJobSummary:
    created = timestamp(row["created_at"])
    assert created is not None
    counts = {k: None if row[k] is None else int(row[k]) for k in ("tokens", "embedded", "failed", "released")}
    return BatchJobSummary(
        id=str(row["id"]),
        name=row["name"],
        model=str(row["model"]),
        target=str(row["target"]),
        state=str(row["state"]),
        remote_state=row["remote_state"],
        outcome=row["outcome"],
        chunks=int(row["chunks"]),
        created_at=created,
        submitted_at=timestamp(row["submitted_at"]),
        finished_at=timestamp(row["finished_at"]),
        error=row["error"],
        **counts,
    )


def model_migration(row: dict[str, Any]) -> ModelMigrationRow:
    started = timestamp(row["started_at"])
    assert started is not None
    return ModelMigrationRow(
        id=str(row["id"]),
        source_model=row["source_model"],
        target_model=str(row["target_model"]),
        state=str(row["state"]),
        started_at=started,
        seeded_at=timestamp(row["seeded_at"]),
        cut_over_at=timestamp(row["cut_over_at"]),
        ended_at=timestamp(row["ended_at"]),
        agreement=None if row["agreement"] is None else float(row["agreement"]),
        agreement_sample=None if row["agreement_sample"] is None else int(row["agreement_sample"]),
        note=row["note"],
    )
