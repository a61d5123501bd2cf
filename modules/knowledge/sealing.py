"""Closing a process's /proc entries to other processes of the same user (Linux).

A process is "dumpable" by default: any other process of the same user may read its
/proc/<pid>/environ (every secret the app was started with), /proc/<pid>/mem, its working directory
(/proc/<pid>/cwd) and open files (/proc/<pid>/fd). `seal_process()` makes it non-dumpable with
prctl(PR_SET_DUMPABLE, 0): those entries then belong to root, and only a process with CAP_SYS_PTRACE
(root, in practice) may read them. The upload API seals the process that starts the upload workers
(each worker reads a hostile file as the same user), and each worker seals itself (it holds another
user's document).

What it costs: no core dump of the process, and a debugger or profiler (gdb, py-spy) needs root to
attach. /proc/<pid>/cmdline and /proc/<pid>/status stay readable by everyone (ps still works). A child
started with exec is dumpable again. Elsewhere than Linux nothing is done.
"""

from __future__ import annotations

import ctypes
import sys

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def seal_process() -> bool:
    """Make this process non-dumpable (see the module docstring); whether it is now."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def is_sealed() -> bool:
    """Whether this process is non-dumpable (False elsewhere than Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
