"""The BatchEmbedder port: embed many texts as one asynchronous job (Google's Batch API: half the
online price, outside the per-minute quota, done within 24 hours), found again later by its name.

A job is submitted with a display name chosen by the caller (the database's job id), so that a caller
that crashed between submitting and recording the answer can find the job again (`find`) instead of
submitting the same texts twice. Results come back in the order of the requests, one per request:
values, or that request's own error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from modules.embedders.base import EmbedRequest


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def done(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)


@dataclass(frozen=True)
class RemoteJob:
    name: str  # the API's name for it, e.g. batches/123
    display_name: str | None
    state: JobState
    error: str | None = None  # why a job failed, when the API says


@dataclass(frozen=True)
class ItemResult:
    """One request's answer: its vector's values, or its own error (never both)."""

    values: tuple[float, ...] | None
    error: str | None = None
    tokens: int | None = None  # input tokens the API counted, when it says


class BatchEmbedder(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    async def submit(self, display_name: str, requests: Sequence[EmbedRequest]) -> RemoteJob:
        """Create a job embedding `requests` (as documents, with their titles)."""
        ...

    async def get(self, name: str) -> RemoteJob: ...

    async def find(self, display_name: str) -> RemoteJob | None:
        """The job submitted under `display_name`, if the API has one (a create whose answer was lost)."""
        ...

    async def results(self, job: RemoteJob, count: int) -> list[ItemResult]:
        """A succeeded job's answers, one per request in the order sent (`count` of them)."""
        ...

    async def cancel(self, name: str) -> None: ...

    async def aclose(self) -> None: ...
