"""The standalone app as an operator runs it (`uvicorn modules.knowledge.api:app`, a real process on a
real port, the embedded PostgreSQL): stopping it with SIGTERM or Ctrl-C (SIGINT) stops the embedded
PostgreSQL it started. uvicorn re-raises SIGTERM after its shutdown, and the default handler ends the
process without running atexit, where the server used to be stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.api_helpers import API_TOKEN, AUTH

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lifecycle") / "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postmaster(data_dir: Path) -> psutil.Process | None:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    try:
        process = psutil.Process(int(pid_file.read_text().split()[0]))
    except (psutil.NoSuchProcess, ValueError, IndexError):
        return None
    return process if process.is_running() and process.status() != psutil.STATUS_ZOMBIE else None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_app_stops_the_embedded_postgres_it_started(
    data_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "BATCH_EMBEDDING_DOTENV": str(tmp_path / "absent.env"),
        "KNOWLEDGE_API_TOKEN": API_TOKEN,
        "EMBEDDED_PG_DIR": str(data_dir),
        "EMBEDDING_PROVIDER": "local",
        "EMBEDDING_LOG_FILE": str(tmp_path / "batch_embedding.log"),
    }
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "modules.knowledge.api:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = None
    try:
        deadline = time.monotonic() + 120
        while True:
            assert app.poll() is None, app.communicate()[0]
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/knowledge/documents", headers=AUTH, timeout=5).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json() == {"status": "ok"}
        server = postmaster(data_dir)
        assert server is not None

        app.send_signal(sig)
        output, _ = app.communicate(timeout=60)
        deadline = time.monotonic() + 20
        while postmaster(data_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert postmaster(data_dir) is None, f"the embedded PostgreSQL is still running after {sig.name}:\n{output}"
        assert "Traceback" not in output
    finally:
        if app.poll() is None:
            app.kill()
        left = postmaster(data_dir)
        if left is not None:
            left.terminate()
