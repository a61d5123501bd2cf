"""Where batch jobs live: in the simulator's memory, by name, for as long as the simulator runs
(a client that dies and comes back, or another process, finds its job by name), until deleted or
`reset()`.

Listing is newest first; a page token names the creation number to continue below, so deleting or
creating jobs between pages neither repeats nor skips a job.
"""

from __future__ import annotations

import base64
import binascii
import threading

from .batch_jobs import BatchJob
from .files_store import random_id

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class InvalidPageToken(ValueError):
    pass


def _token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode("ascii")


def _seq(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        kind, _, number = text.partition(":")
        if kind != "seq":
            raise ValueError(text)
        return int(number)
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidPageToken(token) from None


class BatchStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, BatchJob] = {}
        self._seq = 0

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()

    def new_name(self) -> tuple[str, int]:
        """A fresh job name and creation number."""
        with self._lock:
            self._seq += 1
            while True:
                name = f"batches/{random_id(36)}"
                if name not in self._jobs:
                    return name, self._seq

    def add(self, job: BatchJob) -> None:
        with self._lock:
            self._jobs[job.name] = job

    def get(self, name: str) -> BatchJob | None:
        with self._lock:
            return self._jobs.get(name)

    def remove(self, name: str) -> BatchJob | None:
        with self._lock:
            return self._jobs.pop(name, None)

    def all(self) -> list[BatchJob]:
        with self._lock:
            return list(self._jobs.values())

    def page(self, page_size: int | None, page_token: str | None) -> tuple[list[BatchJob], str | None]:
        """One page of jobs, newest first, and the token of the next page (None: last page)."""
        size = DEFAULT_PAGE_SIZE if not page_size or page_size < 1 else min(page_size, MAX_PAGE_SIZE)
        below = _seq(page_token) if page_token else None
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda job: job.seq, reverse=True)
        if below is not None:
            jobs = [job for job in jobs if job.seq < below]
        page, rest = jobs[:size], jobs[size:]
        return page, _token(page[-1].seq) if rest else None
