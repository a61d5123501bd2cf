"""Worker names, and telling which lease owners are dead.

A worker is named `host:pid:random`. A lease owner on this host whose process no longer exists (or is
no longer a Python process: its pid was reused) is dead for sure, so its chunks can be taken at once;
an owner on another host can't be checked from here, and its chunks come back when its lease expires
(about a minute, since a live worker renews its leases while a batch is in flight).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_dead_local_worker(owner: str, host: str | None = None) -> bool:
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != (host or socket.gethostname()) or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"python" not in cmdline.read_bytes()
    except OSError:
        return False  # no /proc: trust that the pid is alive


def dead_local_owners(owners: Iterable[str]) -> tuple[str, ...]:
    host = socket.gethostname()
    return tuple(o for o in owners if is_dead_local_worker(o, host))
