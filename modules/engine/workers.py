"""Worker names, and telling which lease owners are dead.

A worker is named `host:pid:start:random`, where `start` identifies this very process: its start time
(in clock ticks since boot, from /proc) and its PID namespace. A lease owner whose name says it ran in
this host's PID namespace, and whose pid is gone or now belongs to a process that started at another
time (the pid was reused), is dead for sure, so its chunks can be taken at once. Anything else is
presumed alive: an owner on another host, in another container (another PID namespace, even under the
same host name), a name of the older `host:pid:random` form, or where /proc can't tell; its chunks come
back when its lease expires (about a minute, since a live worker renews its leases while it works).
Nothing here looks at a process's command line: a worker may run under uWSGI, gunicorn or any renamed
interpreter.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path


def process_identity(pid: int) -> str | None:
    """`<start ticks>.<pid namespace inode>` of a process, or None where /proc can't say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        start = stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command's parentheses
        namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except (OSError, IndexError):
        return None
    return f"{start}.{namespace}"


def worker_name() -> str:
    identity = process_identity(os.getpid()) or "unknown"
    return f"{socket.gethostname()}:{os.getpid()}:{identity}:{uuid.uuid4().hex[:8]}"


def is_dead_local_worker(owner: str, host: str | None = None) -> bool:
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != (host or socket.gethostname()) or not parts[1].isdigit():
        return False  # another host, or a name this rule can't judge
    pid, identity = int(parts[1]), parts[2]
    ours = process_identity(os.getpid())
    if ours is None or identity == "unknown" or identity.split(".")[-1] != ours.split(".")[-1]:
        return False  # another PID namespace (a container): its pids mean nothing here
    if pid == os.getpid():
        return identity != ours
    now = process_identity(pid)
    if now is None:
        return not Path(f"/proc/{pid}").exists()  # gone (or unreadable: then presumed alive)
    return now != identity  # the pid now belongs to a process that started at another time


def dead_local_owners(owners: Iterable[str]) -> tuple[str, ...]:
    host = socket.gethostname()
    return tuple(o for o in owners if is_dead_local_worker(o, host))
