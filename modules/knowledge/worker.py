"""The process that reads one upload: `python -m modules.knowledge.worker` (started by isolation.py).

Protocol, so that nothing is unpickled on either side: stdin holds one JSON line (the file's name, the
upload limits and the chunking options), then the file's bytes to the end; stdout gets one JSON object,
{"ok": true, "doc_type", "chunks", "chars"} or {"ok": false, "kind", "message", "setting"}, each with
"peak_rss_bytes", this process's peak resident memory.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from typing import Any

from modules.knowledge.chunking import ChunkingOptions
from modules.knowledge.errors import DocumentTooLargeError, UnreadableDocumentError
from modules.knowledge.extract import UploadLimits
from modules.knowledge.prepare import prepare_document
from modules.knowledge.sealing import seal_process


def peak_rss_bytes() -> int:
    """This process's peak resident memory. On Linux from VmHWM: ru_maxrss would still hold the RSS of
    the server it was forked from (a fork counts the parent's pages as its own until it execs)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def answer(filename: str, data: bytes, limits: UploadLimits, options: ChunkingOptions) -> dict[str, Any]:
    try:
        document = prepare_document(filename, data, limits, options)
    except DocumentTooLargeError as exc:
        return {"ok": False, "kind": "too_large", "message": str(exc), "setting": exc.setting}
    except UnreadableDocumentError as exc:
        return {"ok": False, "kind": "unreadable", "message": str(exc), "setting": None}
    except MemoryError:
        message = f"{filename}: reading it needs more memory than there is"
        return {"ok": False, "kind": "unreadable", "message": message, "setting": None}
    except Exception as exc:  # a reader's own bug on a strange file: still the file's answer, not a 500
        said = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {said[0][:200]}" if said else type(exc).__name__
        message = f"{filename}: could not be read ({reason})"
        return {"ok": False, "kind": "unreadable", "message": message, "setting": None}
    return {"ok": True, "doc_type": document.doc_type, "chunks": document.chunks, "chars": document.chars}


def main() -> int:
    seal_process()  # it holds an uploader's document: closed to the other workers of the same user
    # This process is ours alone: readers' warnings about a broken file ("EOF marker not found") would be
    # noise on the server's console (the answer says what matters), and stdout carries only the answer.
    logging.getLogger().addHandler(logging.NullHandler())
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    job = json.loads(sys.stdin.buffer.readline())
    data = sys.stdin.buffer.read()
    reply = answer(job["filename"], data, UploadLimits(**job["limits"]), ChunkingOptions(**job["options"]))
    reply["peak_rss_bytes"] = peak_rss_bytes()
    out.write(json.dumps(reply).encode("ascii"))
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
