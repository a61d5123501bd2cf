"""Reading and chunking an upload in a process of its own, with its own time limit, so that one upload
(a 5,000-page PDF, a zip bomb) never stalls the event loop that answers everyone else's searches, and a
runaway one can be killed.

Each upload gets a fresh `python -m modules.knowledge.worker` (worker.py): a clean process whose
memory is given back when it ends, that imports only the readers, and that knows nothing of the host
app (a fork of the host would copy its memory, threads and sockets; multiprocessing would re-import
its main module). Starting one costs about 0.2 s. At most `workers` run at once; further uploads wait
their turn. The job goes in, and the answer comes back, as JSON and bytes: nothing is unpickled. Past
`timeout` seconds the process is killed.

What a reader exploited by a hostile file finds in the worker, which runs as the app's user:
- an empty environment: only PYTHONPATH (where `modules` is), none of the app's variables;
- a working directory of its own, empty (no .env), made for this upload and deleted after it;
- the app's process closed to it: the service seals the app (sealing.py), so its /proc/<pid>/environ,
  mem, cwd and fd can't be read by a process of the same user; the worker seals itself too.
It is not a sandbox: the worker can still do what the app's user can do with files and sockets, e.g.
read a .env whose path it knows or guesses, or connect to the embedded PostgreSQL's socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modules.knowledge.chunking import DEFAULT_OPTIONS, ChunkingOptions
from modules.knowledge.errors import DocumentTooLargeError, UnreadableDocumentError
from modules.knowledge.extract import UploadLimits
from modules.knowledge.prepare import PreparedDocument
from modules.logs import get_logger

log = get_logger(__name__)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where `modules` is importable from


def worker_environment() -> dict[str, str]:
    """The worker's whole environment: where to import from, nothing of the app's (no keys, passwords,
    tokens, nor anything else: the worker reads hostile files and needs none of it). The interpreter
    finds its own packages (a venv's through pyvenv.cfg); Windows needs SYSTEMROOT to start Python."""
    paths = (_PACKAGE_ROOT, os.environ.get("PYTHONPATH"))
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    if sys.platform == "win32" and "SYSTEMROOT" in os.environ:
        env["SYSTEMROOT"] = os.environ["SYSTEMROOT"]
    return env


class ExtractionTimeoutError(UnreadableDocumentError):
    """Reading the file took longer than UPLOAD_EXTRACT_TIMEOUT; its process was killed."""

    setting = "UPLOAD_EXTRACT_TIMEOUT"


@dataclass(frozen=True)
class WorkerReport:
    """What one upload's worker did: the document, or the reason it was refused."""

    filename: str
    document: PreparedDocument | None
    error: UnreadableDocumentError | None
    seconds: float
    peak_rss_bytes: int | None  # the worker process's peak resident memory (None: it never said)


class Extractor:
    """Runs `prepare_document` in worker processes: `report = await extractor.run(filename, data)`."""

    def __init__(
        self,
        *,
        workers: int = 2,
        timeout: float = 120.0,
        limits: UploadLimits | None = None,
        options: ChunkingOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.timeout = timeout
        self.limits = limits or UploadLimits()
        self.options = options
        self._slots = asyncio.Semaphore(workers)
        self.last_report: WorkerReport | None = None

    async def run(self, filename: str, data: bytes) -> WorkerReport:
        async with self._slots:
            started = time.monotonic()
            report = await self._in_process(filename, data, started)
        self.last_report = report
        return report

    async def _in_process(self, filename: str, data: bytes, started: float) -> WorkerReport:
        job = {"filename": filename, "limits": asdict(self.limits), "options": asdict(self.options)}
        stdin = json.dumps(job).encode("ascii") + b"\n" + data
        with tempfile.TemporaryDirectory(prefix="upload-worker-", ignore_cleanup_errors=True) as scratch:
            return await self._run_worker(filename, stdin, scratch, started)

    async def _run_worker(self, filename: str, stdin: bytes, scratch: str, started: float) -> WorkerReport:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modules.knowledge.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=worker_environment(),
            cwd=scratch,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(stdin), self.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            error = ExtractionTimeoutError(
                f"{filename}: reading and chunking it took longer than {self.timeout:g} s "
                "(UPLOAD_EXTRACT_TIMEOUT); split the file, or raise the limit"
            )
            return WorkerReport(filename, None, error, time.monotonic() - started, None)
        except BaseException:  # cancelled (the client went away): leave no process behind
            if process.returncode is None:
                process.kill()
                await asyncio.shield(process.wait())
            raise
        return self._report(filename, stdout, stderr, process.returncode, time.monotonic() - started)

    def _report(self, filename: str, stdout: bytes, stderr: bytes, code: int | None, seconds: float) -> WorkerReport:
        try:
            reply: dict[str, Any] = json.loads(stdout)
        except ValueError:
            last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            log.error("❌ 読み取りプロセスが応答せずに終了しました (終了コード %s): %s", code, last[0][:300])
            error = UnreadableDocumentError(
                f"{filename}: the process reading it stopped without an answer (exit code {code}); "
                "the file may need more memory than there is"
            )
            return WorkerReport(filename, None, error, seconds, None)
        peak = reply.get("peak_rss_bytes")
        if reply.get("ok"):
            document = PreparedDocument(str(reply["doc_type"]), [str(c) for c in reply["chunks"]], int(reply["chars"]))
            return WorkerReport(filename, document, None, seconds, peak)
        message = str(reply["message"])
        if reply.get("kind") == "too_large":
            return WorkerReport(filename, None, DocumentTooLargeError(message, str(reply["setting"])), seconds, peak)
        return WorkerReport(filename, None, UnreadableDocumentError(message), seconds, peak)
