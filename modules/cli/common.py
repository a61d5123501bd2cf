"""What every command-line face shares: exit codes, one-line errors, signals, logging options."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn

from modules.cli.logging_setup import configure_logging, log_exception_to_file, log_to_file_only
from modules.errors import (
    ApiUnavailableError,
    BatchEmbeddingError,
    DatabaseLostError,
    MigrationError,
    MigrationNotReadyError,
    ModelMismatchError,
    ProviderConfigError,
    RunAborted,
    SchemaMismatchError,
    StoreError,
    UnknownDocumentError,
)
from modules.logs import get_logger, scrub
from modules.settings import Settings, SettingsError, load_settings

EXIT_OK = 0  # nothing in the run's scope is failed or pending (--limit's leftovers aside)
EXIT_FAILED = 1  # chunks in scope are recorded failed (earlier runs' too), or left pending
EXIT_USAGE = 2  # usage, settings, or environment error: nothing was attempted
EXIT_API_UNAVAILABLE = 3  # the API could not be used (outage, quota, key revoked): chunks released untouched
EXIT_INTERRUPTED = 130
EXIT_CODES_HELP = (
    "Exit codes: 0 nothing in scope left failed or pending (--limit's leftovers aside); 1 chunks in scope are "
    "failed (earlier runs' too: retry with --retry-only) or left pending; 2 usage, settings or environment "
    "error, nothing attempted; 3 the embedding API (outage, quota, key) or, once the run began, the database "
    "could not be used: nothing charged, try again later; 130 interrupted. --watch: 0 when stopped by SIGTERM, "
    "130 by Ctrl-C, 2 for errors waiting can't fix."
)

log = get_logger(__name__)


class UsageError(Exception):
    """A command was asked for something it can't do (exit 2): one line says what."""


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="show debug lines too")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on the console")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the exit code when there is nothing to run (--help: 0, usage error: 2).
    A usage error is printed as argparse prints it, and goes to the log file too."""
    complain = parser.error

    def error(message: str) -> NoReturn:
        log_to_file_only(f"❌ 使い方のエラー: {parser.prog}: {message}", [])
        complain(message)

    parser.error = error  # type: ignore[method-assign]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    if getattr(args, "doc_id", None) is not None and not args.doc_id.strip():
        parser.print_usage(sys.stderr)
        fail("--doc-id must not be empty", [])
        return EXIT_USAGE
    return args


def setup(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    configure_logging(settings.log_file, settings.secrets(), level=level)
    for warning in settings.warnings:
        log.warning("⚠️ 設定の警告: %s", warning)
    return settings


def fail(message: str, secrets: list[str], mark: str = "❌") -> None:
    """The one line that ends a run: on stderr, and in the log file too."""
    line = f"{mark} {scrub(message, secrets)}"
    print(line, file=sys.stderr)
    log_to_file_only(line, secrets)


def run_main(body: Callable[[], Awaitable[int]], secrets: Callable[[], list[str]]) -> int:
    """Run an async command; turn known errors into one clear line and an exit code, and make
    SIGINT/SIGTERM cancel the run cleanly (the batch in flight is written or released)."""

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await body()

    try:
        return asyncio.run(guarded())
    except SettingsError as exc:
        fail(f"設定エラー: {exc}", [])
        return EXIT_USAGE
    except UsageError as exc:
        fail(f"使い方のエラー: {exc}", secrets())
        return EXIT_USAGE
    except UnknownDocumentError as exc:
        fail(f"ドキュメントが見つかりません: {exc.doc_id!r} (--status --by-document で一覧を確認できます)", secrets())
        return EXIT_USAGE
    except (ProviderConfigError, SchemaMismatchError, ModelMismatchError) as exc:
        fail(f"設定エラー: {exc}", secrets())
        return EXIT_USAGE
    except DatabaseLostError as exc:
        fail(
            f"データベースに接続できなくなったため中断しました: {exc} | 再実行の目安: {exc.retry_hint}", secrets(), "🛑"
        )
        return EXIT_API_UNAVAILABLE
    except ApiUnavailableError as exc:
        fail(f"埋め込みAPIを利用できないため中断しました: {exc} | 再実行の目安: {exc.retry_hint}", secrets(), "🛑")
        return EXIT_API_UNAVAILABLE
    except MigrationNotReadyError as exc:
        fail(f"モデル移行はまだ切り替えられません: {exc}", secrets(), "⏳")
        return EXIT_FAILED
    except MigrationError as exc:
        fail(f"モデル移行: {exc}", secrets())
        return EXIT_USAGE
    except StoreError as exc:
        fail(f"データベースエラー: {exc}", secrets())
        return EXIT_USAGE
    except RunAborted as exc:
        fail(f"処理を中断しました: {exc}", secrets())
        return EXIT_FAILED
    except BatchEmbeddingError as exc:
        fail(str(exc), secrets())
        return EXIT_FAILED
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(file=sys.stderr)
        fail("中断しました。処理中のバッチは書き込み済みか、未処理に戻してあります。", secrets(), "⏹️")
        return EXIT_INTERRUPTED
    except Exception as exc:
        # A bug or an error nobody foresaw: the traceback goes to the log file (scrubbed of secrets
        # like every log line), the console gets one line. Library texts may carry secrets, hence scrub.
        log_exception_to_file("予期しないエラー")
        fail(f"予期しないエラー: {type(exc).__name__}: {exc} (詳細は batch_embedding.log)", secrets())
        return EXIT_FAILED


def safe_secrets() -> list[str]:
    try:
        return load_settings().secrets()
    except SettingsError:
        return []
