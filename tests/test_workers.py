"""Which lease owners are dead: judged by process identity (start time and PID namespace), never by a
process's command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from modules.engine.workers import dead_local_owners, is_dead_local_worker, process_identity, worker_name

SPEAK = "from modules.engine.workers import worker_name; print(worker_name(), flush=True); import time; time.sleep(30)"
ROOT = Path(__file__).resolve().parents[1]


def start_worker(executable: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [executable, "-c", SPEAK],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_a_live_worker_under_any_process_name_is_alive_and_a_finished_one_is_dead(tmp_path: Path) -> None:
    renamed = tmp_path / "embedder-A"  # like uWSGI or gunicorn: no "python" on its command line
    renamed.symlink_to(sys.executable)
    proc, name = start_worker(str(renamed))
    try:
        assert name.count(":") == 3 and not is_dead_local_worker(name)
    finally:
        proc.kill()
        proc.wait()
    assert is_dead_local_worker(name) and dead_local_owners([name, "other-host:1:2.3:x"]) == (name,)


def test_a_reused_pid_another_namespace_another_host_or_an_old_name_are_judged_rightly() -> None:
    me = worker_name()
    host, pid, identity, _ = me.split(":")
    assert not is_dead_local_worker(me)  # ourselves
    start, namespace = identity.split(".")
    assert is_dead_local_worker(f"{host}:{pid}:{int(start) - 1}.{namespace}:x")  # same pid, earlier process
    assert not is_dead_local_worker(f"{host}:999999:{start}.{int(namespace) + 1}:x")  # another container
    assert not is_dead_local_worker(f"elsewhere:{pid}:{identity}:x")  # another host
    assert not is_dead_local_worker(f"{socket.gethostname()}:999999:deadbeef")  # the older name form
    assert process_identity(os.getpid()) == identity


def test_the_identity_does_not_change_while_a_process_lives() -> None:
    first = process_identity(os.getpid())
    time.sleep(0.05)
    assert first is not None and process_identity(os.getpid()) == first
