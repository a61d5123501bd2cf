"""A batch embedding job and its life over (compressed) time.

States are Google's `BATCH_STATE_*` (the SDK maps them to `JOB_STATE_*`). A job is created
PENDING, turns RUNNING `batch_pending_seconds` later and ends `batch_running_seconds` after that:
SUCCEEDED, or FAILED when it was drawn to fail. A job drawn to expire never ends by itself; any job
still pending or running `batch_expire_seconds` after its creation becomes EXPIRED ("running or
pending for more than 48 hours ... will not have any results", Batch API guide). `:cancel` turns a
pending or running job CANCELLED.

Durations are read from the live config at every step (a runtime change applies to the job's next
step), and a transition takes effect at the time it was due, not when someone looked: `updateTime`
and `endTime` say when the job changed, whoever polls. A reached state is never undone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .config import SimulatorConfig
from .models import ModelSpec


class BatchState(StrEnum):
    PENDING = "BATCH_STATE_PENDING"
    RUNNING = "BATCH_STATE_RUNNING"
    SUCCEEDED = "BATCH_STATE_SUCCEEDED"
    FAILED = "BATCH_STATE_FAILED"
    CANCELLED = "BATCH_STATE_CANCELLED"
    EXPIRED = "BATCH_STATE_EXPIRED"

    @property
    def terminal(self) -> bool:
        return self not in (BatchState.PENDING, BatchState.RUNNING)


class Outcome(StrEnum):
    """How a job ends unless cancelled first (drawn when it is created)."""

    SUCCEED = "succeed"
    FAIL = "fail"
    EXPIRE = "expire"


@dataclass(frozen=True)
class ItemError:
    """A `google.rpc.Status` for one item: `code` is a google.rpc.Code (3 INVALID_ARGUMENT, 13
    INTERNAL), not an HTTP status."""

    code: int
    message: str

    def payload(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class BatchItem:
    """One request of a job: the text to embed (already cut to the model's limit), or the error it
    will be answered with. `key` is a file line's key, `metadata` an inline request's metadata."""

    text: str  # as sent (the key of the per-text stats)
    embed_text: str  # what is embedded: truncated when over the input limit
    dimensions: int
    tokens: int
    key: str | None = None
    metadata: Any = None
    error: ItemError | None = None


@dataclass
class BatchJob:
    name: str  # "batches/<id>"
    seq: int  # creation order (for listing)
    model: ModelSpec
    display_name: str
    priority: int
    items: list[BatchItem]
    outcome: Outcome
    create_time: float
    input_file: str | None = None  # "files/<id>" for a file job, None for inline requests
    state: BatchState = BatchState.PENDING
    update_time: float = 0.0
    end_time: float | None = None
    # set when the job succeeds: the members of EmbedContentBatchOutput as JSON (without braces)
    output_members: bytes | None = None
    succeeded_items: int = 0
    failed_items: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.update_time:
            self.update_time = self.create_time

    @property
    def id(self) -> str:
        return self.name.removeprefix("batches/")


def next_transition(job: BatchJob, config: SimulatorConfig) -> tuple[BatchState, float] | None:
    """The state the job moves to next by itself, and when (None: it has ended)."""
    if job.state.terminal:
        return None
    expires_at = job.create_time + config.batch_expire_seconds
    if job.state is BatchState.PENDING:
        step: tuple[BatchState, float] | None = (BatchState.RUNNING, job.update_time + config.batch_pending_seconds)
    elif job.outcome is Outcome.EXPIRE:
        step = None
    else:
        final = BatchState.FAILED if job.outcome is Outcome.FAIL else BatchState.SUCCEEDED
        step = (final, job.update_time + config.batch_running_seconds)
    if step is None or expires_at <= step[1]:
        return BatchState.EXPIRED, expires_at
    return step


def advance(job: BatchJob, now: float, config: SimulatorConfig) -> list[BatchState]:
    """Apply every transition due by `now`; the states entered, in order."""
    entered: list[BatchState] = []
    while (step := next_transition(job, config)) is not None and step[1] <= now:
        enter(job, *step)
        entered.append(job.state)
    return entered


def enter(job: BatchJob, state: BatchState, at: float) -> None:
    job.state = state
    job.update_time = at
    if state.terminal:
        job.end_time = at
