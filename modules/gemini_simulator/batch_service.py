"""The Batch API's behaviour, apart from HTTP: creating jobs, moving them on in time, producing their
results, and the files they read and write.

Results are produced when a job succeeds: every item's vector is `model_embedding(model, text,
dimensions)`, the same pure function the online endpoints answer with, so a test can predict every
stored vector; an item drawn to fail (`batch_item_error_rate`, drawn when the job is created) or
refused (poison marker, over the limit with `over_limit=reject`, a bad file line) is answered with an
error instead. An inline job keeps its results in the job; a file job writes a JSONL result file,
`files/batch-<job id>`, downloadable through the Files API. The stats count the items of a job when
it succeeds (see `SimulatorStats`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from . import google_errors
from .batch_faults import BatchDice
from .batch_jobs import BatchItem, BatchJob, BatchState, ItemError, advance, enter
from .batch_requests import parse_create, parse_input_file
from .batch_store import BatchStore
from .batch_wire import file_output, inline_output, result_file
from .config import SimulatorConfig
from .files_store import FileStore, StoredFile, Upload
from .models import ModelSpec
from .stats import SimulatorStats
from .vectors import model_embedding, text_sha256

INTERNAL = 13
RESULT_MIME_TYPE = "application/jsonl"


class BatchService:
    def __init__(
        self,
        config: Callable[[], SimulatorConfig],
        stats: SimulatorStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._stats = stats
        self._clock = clock
        self.lock = threading.RLock()  # held by every change to jobs (and by the server's reset)
        self.jobs = BatchStore()
        self.files = FileStore()
        self.dice = BatchDice(config().seed)

    def reset(self) -> None:
        """Forget every job and file (the stats are cleared by their owner)."""
        with self.lock:
            self.jobs.clear()
            self.files.clear()
            self.dice.reseed(self._config().seed)

    # ------------------------------------------------------------------ jobs
    def create(self, model: ModelSpec, version: str, body: bytes) -> BatchJob:
        """A new job from an asyncBatchEmbedContent body (raises ApiError)."""
        config = self._config()
        if len(body) > config.batch_inline_limit_bytes:
            raise google_errors.too_large(config.batch_inline_limit_bytes)
        spec = parse_create(body, model, version, config)
        items = spec.items
        if items is None:
            assert spec.input_file is not None
            items = parse_input_file(self.files.get(spec.input_file).data, model, version, config)
            if not items:
                raise google_errors.bad_request(f"The input file {spec.input_file} contains no requests.")
        with self.lock:
            outcome = self.dice.outcome(config)
            items = [self._maybe_failing(item, config) for item in items]
            name, seq = self.jobs.new_name()
            job = BatchJob(
                name, seq, model, spec.display_name, spec.priority, items, outcome, self._clock(), spec.input_file
            )
            self.jobs.add(job)
            self._stats.record_batch_created(job.name, job.display_name, len(items), job.state.value)
        return job

    def _maybe_failing(self, item: BatchItem, config: SimulatorConfig) -> BatchItem:
        if item.error is None and self.dice.chance(config.batch_item_error_rate, config):
            return dataclasses.replace(item, error=ItemError(INTERNAL, "Internal error encountered."))
        return item

    def job(self, name: str) -> BatchJob:
        """The job as of now (raises a 404 ApiError)."""
        with self.lock:
            job = self.jobs.get(name)
            if job is None:
                raise google_errors.not_found()
            self._advance(job)
            return job

    def page(self, page_size: int | None, page_token: str | None) -> tuple[list[BatchJob], str | None]:
        with self.lock:
            jobs, token = self.jobs.page(page_size, page_token)
            for job in jobs:
                self._advance(job)
            return jobs, token

    def cancel(self, name: str) -> BatchJob:
        """Cancel a pending or running job; an ended job stays as it is."""
        with self.lock:
            job = self.job(name)
            if not job.state.terminal:
                before = job.state
                enter(job, BatchState.CANCELLED, self._clock())
                self._stats.record_batch_state(before.value, job.state.value)
            return job

    def delete(self, name: str) -> None:
        """Forget the job: it stops, leaves the list and answers 404 from now on."""
        with self.lock:
            job = self.jobs.get(name)
            if job is None:
                raise google_errors.not_found()
            self._advance(job)
            self.jobs.remove(name)
            self._stats.record_batch_deleted(job.state.value)

    def advance_all(self) -> None:
        """Move every job on to where it should be now (the server calls this periodically)."""
        with self.lock:
            for job in self.jobs.all():
                self._advance(job)

    def _advance(self, job: BatchJob) -> None:
        before = job.state
        for state in advance(job, self._clock(), self._config()):
            self._stats.record_batch_state(before.value, state.value)
            before = state
            if state is BatchState.SUCCEEDED:
                self._finish(job)

    def _finish(self, job: BatchJob) -> None:
        config = self._config()
        vectors = [
            None if item.error is not None else model_embedding(job.model.name, item.embed_text, item.dimensions)
            for item in job.items
        ]
        if job.input_file is None:
            job.output_members = inline_output(job.items, vectors, config.batch_token_count)
        else:
            data = result_file(job.items, vectors, config.batch_token_count)
            stored = self.files.add_generated(f"files/batch-{job.id}", data, RESULT_MIME_TYPE, job.update_time)
            job.output_members = file_output(stored.name)
        embedded = [item for item in job.items if item.error is None]
        job.succeeded_items = len(embedded)
        job.failed_items = len(job.items) - len(embedded)
        self._stats.record_batch_results(
            job.model.name,
            [text_sha256(item.text) for item in embedded],
            sum(item.tokens for item in embedded),
            job.failed_items,
        )

    # ------------------------------------------------------------------ files
    def start_upload(self, name: str | None, display_name: str | None, mime_type: str, size: int) -> Upload:
        return self.files.start_upload(name, display_name, mime_type, size)

    def append_upload(self, upload_id: str, offset: int, chunk: bytes, finalize: bool) -> StoredFile | None:
        stored = self.files.append(upload_id, offset, chunk, finalize, self._clock())
        if stored is not None:
            self._stats.record_upload(len(stored.data))
        return stored

    def file(self, name: str) -> StoredFile:
        return self.files.get(name)

    def delete_file(self, name: str) -> None:
        self.files.delete(name)

    def download(self, name: str) -> StoredFile:
        """A generated file's bytes (uploaded files cannot be downloaded, as the SDK says)."""
        stored = self.files.get(name)
        if stored.source != "GENERATED":
            raise google_errors.bad_request(f"Only generated files can be downloaded; {name} was uploaded.")
        self._stats.record_download()
        return stored
