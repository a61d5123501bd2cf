"""One frozen, validated Settings object, read once from the environment and `.env`.

Each setting is declared once, as a field of `Settings` (or `TableNames`) whose metadata holds its
environment name, parser (with the allowed range), group and one line of help. Everything else is
derived from that declaration: the loader, the one-line error for a wrong value, `.env.example` and
the README's settings table (`python -m modules.settings --env-example / --markdown`; a test checks
that both files match). A wrong value stops the program at start with one line that names the
setting and says how to fix it.

Paths are relative to the working directory (never to the installed package), so a wheel install
keeps `.env`, `.data/` and `batch_embedding.log` where the program is run.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values

from modules.embedding_models import model_info

GEMINI_MAX_BATCH = 100  # batchEmbedContents refuses more than 100 texts per call
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
TASK_TYPES = (
    "RETRIEVAL_DOCUMENT",
    "RETRIEVAL_QUERY",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
)
DOTENV_SETTING = "BATCH_EMBEDDING_DOTENV"
MIN_TOKEN_LENGTH = 16  # KNOWLEDGE_API_TOKEN: a bearer token guessable in a few tries protects nothing

Provider = Literal["gemini", "local"]
OverlongPolicy = Literal["truncate", "fail"]


class SettingsError(ValueError):
    """A setting has a value the program cannot run with. `str()` is one line naming the setting."""

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name
        super().__init__(f"{name}: {problem}")


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --- parsers: text -> value, or ValueError("expected ...") ----------------------------------------


@dataclass(frozen=True)
class Parser:
    """Turns the text of a setting into its value; `expected` says what is allowed."""

    convert: Callable[[str], Any]
    expected: str

    def __call__(self, text: str) -> Any:
        return self.convert(text)


class _Invalid(ValueError):
    """A value that parses but is not allowed (out of range): the message is the whole problem."""


def integer(low: int, high: int) -> Parser:
    def convert(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range; expected a whole number from {low} to {high}")
        return value

    return Parser(convert, f"a whole number from {low} to {high}")


def optional_integer(low: int) -> Parser:
    def convert(text: str) -> int:
        value = int(text)
        if value < low:
            raise _Invalid(f"{value} is out of range; expected at least {low}, or empty to learn it")
        return value

    return Parser(convert, f"a whole number of at least {low}, or empty")


def seconds(low: float, high: float) -> Parser:
    def convert(text: str) -> float:
        value = float(text)
        if not low <= value <= high:  # also refuses NaN
            raise _Invalid(f"{value:g} is out of range; expected from {low:g} to {high:g}")
        return value

    return Parser(convert, f"a number of seconds from {low:g} to {high:g}")


def auto_or_integer(low: int, high: int) -> Parser:
    def convert(text: str) -> int | str:
        if text.lower() == "auto":
            return "auto"
        try:
            value = int(text)
        except ValueError:
            raise ValueError(text) from None
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range; expected auto or a whole number from {low} to {high}")
        return value

    return Parser(convert, f"auto or a whole number from {low} to {high}")


def quantity(low: float, high: float, unit: str) -> Parser:
    def convert(text: str) -> float:
        value = float(text)
        if not low <= value <= high:  # also refuses NaN
            raise _Invalid(f"{value:g} is out of range; expected from {low:g} to {high:g} {unit}")
        return value

    return Parser(convert, f"a number of {unit} from {low:g} to {high:g}")


def minutes(low: float, high: float) -> Parser:
    return quantity(low, high, "minutes")


def percent() -> Parser:
    def convert(text: str) -> float:
        value = float(text.removesuffix("%"))
        if not 0.0 <= value <= 100.0:
            raise _Invalid(f"{value:g} is out of range; expected a percentage from 0 to 100")
        return value

    return Parser(convert, "a percentage from 0 to 100")


def optional_port() -> Parser:
    def convert(text: str) -> int:
        value = int(text)
        if not 0 <= value <= 65535:
            raise _Invalid(f"{value} is out of range; expected a port from 0 (any free one) to 65535, or empty")
        return value

    return Parser(convert, "a port from 0 to 65535, or empty")


def time_zone() -> Parser:
    def convert(text: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise _Invalid(f"{text!r} is not a time zone name like Asia/Tokyo or UTC") from None
        return text

    return Parser(convert, "a time zone name like Asia/Tokyo")


def boolean() -> Parser:
    def convert(text: str) -> bool:
        lowered = text.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(text)

    return Parser(convert, "true or false")


def choice(*options: str) -> Parser:
    def convert(text: str) -> str:
        for option in options:
            if text.lower() == option.lower():
                return option
        raise ValueError(text)

    return Parser(convert, f"one of: {', '.join(options)}")


def identifier() -> Parser:
    def convert(text: str) -> str:
        if not _IDENTIFIER.match(text):
            raise _Invalid(
                f"{text!r} is not a plain SQL identifier; use letters, digits and underscores only "
                "(starting with a letter or underscore, at most 63 characters)"
            )
        return text

    return Parser(convert, "a plain SQL identifier")


def text_value() -> Parser:
    return Parser(str, "text")


def path_value() -> Parser:
    return Parser(lambda text: Path(text).expanduser(), "a file or folder path")


def secret_value() -> Parser:
    return Parser(Secret, "a secret")


def model_name() -> Parser:
    def convert(text: str) -> str:
        name = text.removeprefix("models/")
        if not re.match(r"^[a-z0-9][a-z0-9.\-_]*$", name):
            raise _Invalid(f"{name!r} is not a model name like gemini-embedding-001")
        return name

    return Parser(convert, "a model name like gemini-embedding-001")


# --- the declaration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """How one setting is read and documented."""

    env: str
    parse: Parser
    group: str
    help: str
    aliases: tuple[str, ...] = ()
    shown_default: str | None = None  # how the default reads in docs, when the value itself won't do
    example: str | None = None  # a value to show in .env.example instead of the default


def setting(
    default: Any,
    env: str,
    parse: Parser,
    group: str,
    help: str,
    *,
    aliases: tuple[str, ...] = (),
    shown_default: str | None = None,
    example: str | None = None,
) -> Any:
    """A dataclass field declared as a setting."""
    spec = Spec(env, parse, group, help, aliases, shown_default, example)
    return field(default=default, metadata={"setting": spec})


GROUPS = (
    ("provider", "Embedding provider"),
    ("database", "Database"),
    ("upload", "Upload hook and upload API"),
    ("batching", "Batching, retries, pacing"),
    ("operations", "Watcher, run history, metrics, alerts, dashboard"),
    ("logs", "Logs"),
)


@dataclass(frozen=True)
class TableNames:
    """SQL identifiers for the host schema. Validated as plain identifiers; never interpolated raw."""

    schema: str = setting("public", "DB_SCHEMA", identifier(), "database", "Schema of the host tables.")
    chunks: str = setting("chunks", "CHUNKS_TABLE", identifier(), "database", "Table of the document chunks.")
    documents: str = setting(
        "document_sources", "DOCUMENTS_TABLE", identifier(), "database", "Table of the documents (id, name, type)."
    )
    content_column: str = setting(
        "content", "CHUNKS_CONTENT_COLUMN", identifier(), "database", "Column of the chunk's text."
    )
    embedding_column: str = setting(
        "embedding", "CHUNKS_EMBEDDING_COLUMN", identifier(), "database", "The pgvector column the chatbot reads."
    )


@dataclass(frozen=True)
class Settings:
    google_api_key: Secret | None = setting(
        None,
        "GOOGLE_API_KEY",
        secret_value(),
        "provider",
        "Gemini API key (GEMINI_API_KEY is accepted too).",
        aliases=("GEMINI_API_KEY",),
        shown_default="none",
        example="",
    )
    gemini_base_url: str | None = setting(
        None,
        "GOOGLE_GEMINI_BASE_URL",
        text_value(),
        "provider",
        "Send Gemini calls elsewhere, e.g. the bundled simulator (python -m modules.gemini_simulator).",
        shown_default="Google's",
        example="http://127.0.0.1:8089",
    )
    provider: Provider | None = setting(
        None,
        "EMBEDDING_PROVIDER",
        choice("gemini", "local"),
        "provider",
        "gemini, or local (WordLlama, offline). Default: gemini with a key; local only on the embedded database.",
        shown_default="gemini with a key, else local on the embedded database",
        example="gemini",
    )
    model: str = setting(
        "gemini-embedding-001",
        "EMBEDDING_MODEL",
        model_name(),
        "provider",
        "The Gemini embedding model: gemini-embedding-001, or gemini-embedding-2 (another vector space: re-embed).",
    )
    dimensions: int = setting(
        768,
        "EMBEDDING_DIMENSIONS",
        integer(1, 16000),
        "provider",
        "Vector length; must equal the vector column's (checked at start). 768 is Google's recommended cut.",
    )
    task_type: str = setting(
        "RETRIEVAL_DOCUMENT",
        "EMBEDDING_TASK_TYPE",
        choice(*TASK_TYPES),
        "provider",
        "Task the stored vectors are made for: a field for gemini-embedding-001, written into the text for -2.",
    )
    use_title: bool = setting(
        True,
        "EMBEDDING_USE_TITLE",
        boolean(),
        "provider",
        "Send the document's name as each chunk's title (a field for gemini-embedding-001, in the text for -2).",
    )

    database_url: Secret | None = setting(
        None,
        "DATABASE_URL",
        secret_value(),
        "database",
        "Any PostgreSQL with pgvector, Supabase's connection string included. Empty: embedded PostgreSQL.",
        shown_default="embedded PostgreSQL",
        example="postgresql://postgres:password@db.xxxx.supabase.co:5432/postgres",
    )
    supabase_url: str | None = setting(
        None,
        "SUPABASE_URL",
        text_value(),
        "database",
        "Supabase REST path (when there is no DATABASE_URL): the project's URL.",
        shown_default="none",
        example="https://xxxx.supabase.co",
    )
    supabase_key: Secret | None = setting(
        None,
        "SUPABASE_KEY",
        secret_value(),
        "database",
        "The project's service-role key, for the REST path (SUPABASE_SERVICE_ROLE_KEY is accepted too).",
        aliases=("SUPABASE_SERVICE_ROLE_KEY",),
        shown_default="none",
        example="",
    )
    embedded_pg_dir: Path = setting(
        Path(".data/postgres"),
        "EMBEDDED_PG_DIR",
        path_value(),
        "database",
        "Where the embedded PostgreSQL keeps its data (relative to the working directory).",
    )
    tables: TableNames = field(default_factory=TableNames)

    auto_generate: bool = setting(
        False,
        "AUTO_GENERATE_EMBEDDINGS",
        boolean(),
        "upload",
        "Whether an upload embeds its chunks by itself (in the background).",
    )
    knowledge_api_token: Secret | None = setting(
        None,
        "KNOWLEDGE_API_TOKEN",
        secret_value(),
        "upload",
        "Bearer token the standalone upload API requires on every route but /health (it won't start without one).",
        shown_default="none (the standalone app refuses to start)",
        example="",
    )
    upload_max_bytes: int = setting(
        20_000_000, "UPLOAD_MAX_BYTES", integer(1, 1_000_000_000), "upload", "Largest accepted upload, in bytes."
    )
    upload_max_docx_bytes: int = setting(
        100_000_000,
        "UPLOAD_MAX_DOCX_BYTES",
        integer(1, 10_000_000_000),
        "upload",
        "Most bytes a .docx may decompress to (counted while reading; the zip's declared sizes are checked first).",
    )
    upload_max_pdf_pages: int = setting(
        2_000, "UPLOAD_MAX_PDF_PAGES", integer(1, 1_000_000), "upload", "Most pages an uploaded PDF may have."
    )
    upload_max_chars: int = setting(
        2_000_000,
        "UPLOAD_MAX_CHARS",
        integer(1, 1_000_000_000),
        "upload",
        "Most characters of text one upload may yield.",
    )
    upload_max_chunks: int = setting(
        10_000, "UPLOAD_MAX_CHUNKS", integer(1, 10_000_000), "upload", "Most chunks one document may be cut into."
    )
    upload_extract_timeout: float = setting(
        120.0,
        "UPLOAD_EXTRACT_TIMEOUT",
        seconds(1.0, 3600.0),
        "upload",
        "Seconds reading and chunking one upload may take; it runs in its own process, killed after that.",
    )
    upload_extract_workers: int = setting(
        2,
        "UPLOAD_EXTRACT_WORKERS",
        integer(1, 64),
        "upload",
        "Uploads read and chunked at once (one process each); further uploads wait their turn.",
    )
    chunk_target_chars: int = setting(
        500, "CHUNK_TARGET_CHARS", integer(50, 20_000), "upload", "Target chunk size, in characters."
    )
    chunk_overlap_chars: int = setting(
        50,
        "CHUNK_OVERLAP_CHARS",
        integer(0, 10_000),
        "upload",
        "Overlap between chunks, in characters (whole sentences only).",
    )

    batch_size: int | Literal["auto"] = setting(
        10,
        "EMBEDDING_BATCH_SIZE",
        auto_or_integer(1, GEMINI_MAX_BATCH),
        "batching",
        "Texts per API call (1-100), or auto. The guide's default is 10; the API allows 100.",
    )
    retry_batch_size: int = setting(
        5,
        "EMBEDDING_RETRY_BATCH_SIZE",
        integer(1, GEMINI_MAX_BATCH),
        "batching",
        "Size of the smaller batches a failed batch is re-run in (then one by one).",
    )
    max_retries: int = setting(
        3,
        "EMBEDDING_MAX_RETRIES",
        integer(0, 20),
        "batching",
        "Retries of a batch after a transient error (5xx, timeout), with exponential backoff and jitter.",
    )
    retry_delay: float = setting(
        2.0,
        "EMBEDDING_RETRY_DELAY",
        seconds(0.0, 600.0),
        "batching",
        "First backoff delay in seconds (doubles each retry, capped by EMBEDDING_MAX_RETRY_DELAY).",
    )
    max_retry_delay: float = setting(
        60.0, "EMBEDDING_MAX_RETRY_DELAY", seconds(0.0, 3600.0), "batching", "Longest backoff delay, in seconds."
    )
    max_wait: float = setting(
        300.0,
        "EMBEDDING_MAX_WAIT",
        seconds(0.0, 86400.0),
        "batching",
        "Longest the run waits for the quota: a 429 asking for longer, or 429s adding up to more, end the run "
        "with exit 3 (chunks released, not failed).",
        aliases=("EMBEDDING_RATE_LIMIT_MAX_WAIT",),
    )
    outage_seconds: float = setting(
        30.0,
        "EMBEDDING_OUTAGE_SECONDS",
        seconds(0.0, 86400.0),
        "batching",
        "When calls fail for the API's reasons (connection, timeout, 5xx) at least 5 times in a row and none "
        "succeeded for this long, the run stops with exit 3 (chunks released, not failed).",
    )
    lease_seconds: int = setting(
        60,
        "EMBEDDING_LEASE_SECONDS",
        integer(1, 86400),
        "batching",
        "How long a claimed chunk stays taken without a heartbeat (renewed every third of it while in flight).",
    )
    concurrency: int | Literal["auto"] = setting(
        "auto",
        "EMBEDDING_CONCURRENCY",
        auto_or_integer(1, 64),
        "batching",
        "Batches in flight at once: a number, or auto (adaptive, up to EMBEDDING_MAX_CONCURRENCY).",
    )
    max_concurrency: int = setting(
        8, "EMBEDDING_MAX_CONCURRENCY", integer(1, 64), "batching", "Most batches in flight with auto concurrency."
    )
    rpm: int | None = setting(
        None,
        "EMBEDDING_RPM",
        optional_integer(1),
        "batching",
        "Your request quota per EMBEDDING_QUOTA_WINDOW, if you know it. Empty: learn it from the 429s.",
        shown_default="learn",
        example="",
    )
    tpm: int | None = setting(
        None,
        "EMBEDDING_TPM",
        optional_integer(1),
        "batching",
        "Your token quota per EMBEDDING_QUOTA_WINDOW, if you know it. Empty: learn it from the 429s.",
        shown_default="learn",
        example="",
    )
    quota_window: float = setting(
        60.0,
        "EMBEDDING_QUOTA_WINDOW",
        seconds(0.01, 86400.0),
        "batching",
        "The window quotas count over, in seconds (Google's are per minute): for EMBEDDING_RPM / EMBEDDING_TPM "
        "and the limits learned from 429s.",
    )
    request_timeout: float = setting(
        60.0,
        "EMBEDDING_REQUEST_TIMEOUT",
        seconds(0.1, 3600.0),
        "batching",
        "Seconds one API call may take before it counts as a timeout.",
    )
    max_input_tokens: int = setting(
        0,  # 0: not set; the model's own limit is filled in when the settings are validated
        "EMBEDDING_MAX_INPUT_TOKENS",
        integer(1, 1_000_000),
        "batching",
        "Input limit per text in tokens (estimated locally); a longer text is cut or failed (EMBEDDING_OVERLONG).",
        shown_default="the model's: 2048 for gemini-embedding-001, 8192 for gemini-embedding-2",
        example="",
    )
    overlong: OverlongPolicy = setting(
        "truncate",
        "EMBEDDING_OVERLONG",
        choice("truncate", "fail"),
        "batching",
        "A chunk over the input limit: truncate it to fit, or fail it.",
    )
    batch_api_threshold: int | None = setting(
        None,
        "EMBEDDING_BATCH_API_THRESHOLD",
        optional_integer(1),
        "batching",
        "A run whose selection is larger than this goes through the Batch API (half the price, done within "
        "24 h). Empty: only with --batch-api.",
        shown_default="none",
        example="",
    )
    batch_job_size: int = setting(
        5000,
        "EMBEDDING_BATCH_JOB_SIZE",
        integer(1, 1_000_000),
        "batching",
        "Chunks per Batch API job (a job over 18 MB of requests goes as a file).",
    )
    batch_poll_seconds: float = setting(
        60.0,
        "EMBEDDING_BATCH_POLL_SECONDS",
        seconds(0.05, 3600.0),
        "batching",
        "How often a run waiting for Batch API jobs asks how they stand.",
    )
    allow_model_mix: bool = setting(
        False,
        "EMBEDDING_ALLOW_MODEL_MIX",
        boolean(),
        "provider",
        "Let a run add vectors of EMBEDDING_MODEL to a column that holds another model's (search can't compare "
        "them): only while you re-embed everything.",
    )
    cache: bool = setting(
        True,
        "EMBEDDING_CACHE",
        boolean(),
        "batching",
        "Reuse vectors for identical (normalized) text under the same model, dimension, task, title and format.",
    )

    watch_interval: float = setting(
        30.0,
        "EMBEDDING_WATCH_INTERVAL",
        seconds(0.05, 86400.0),
        "operations",
        "--watch: seconds between sweeps for work (the safety net under LISTEN/NOTIFY); on the Supabase REST "
        "path, where there is no LISTEN, the polling interval.",
    )
    watch_period: float = setting(
        300.0,
        "EMBEDDING_WATCH_PERIOD",
        seconds(1.0, 86400.0),
        "operations",
        "--watch: a watcher writes one run-history row per period of this many seconds in which it did something.",
    )
    max_attempts: int = setting(
        5,
        "EMBEDDING_MAX_ATTEMPTS",
        integer(1, 1000),
        "operations",
        "--watch retries a failed chunk by itself until it has failed this many times; then it is quarantined "
        "and waits for --retry-only.",
    )
    retry_cooldown: float = setting(
        60.0,
        "EMBEDDING_RETRY_COOLDOWN",
        seconds(0.0, 86400.0),
        "operations",
        "--watch: seconds a chunk waits after its first failure before it is retried; doubles after each failure.",
    )
    retry_cooldown_max: float = setting(
        3600.0,
        "EMBEDDING_RETRY_COOLDOWN_MAX",
        seconds(0.0, 604800.0),
        "operations",
        "Longest cooldown between two automatic retries of a chunk, in seconds.",
    )
    metrics_port: int | None = setting(
        None,
        "EMBEDDING_METRICS_PORT",
        optional_port(),
        "operations",
        "--watch serves Prometheus metrics at /metrics on this port (0: any free port, logged). Empty: no server.",
        shown_default="none (no metrics server)",
        example="",
    )
    metrics_host: str = setting(
        "127.0.0.1",
        "EMBEDDING_METRICS_HOST",
        text_value(),
        "operations",
        "Address the watcher's /metrics binds to; 0.0.0.0 lets other hosts scrape it (it has no authentication).",
    )
    history_days: int = setting(
        90,
        "EMBEDDING_HISTORY_DAYS",
        integer(1, 36500),
        "operations",
        "Run-history rows and resolved alerts older than this many days are deleted (by watchers).",
    )
    alert_webhook_url: Secret | None = setting(
        None,
        "ALERT_WEBHOOK_URL",
        secret_value(),
        "operations",
        "Where alerts are posted as Slack-compatible JSON: https://, or http:// to this host only. Empty: alerts "
        "are only shown on the dashboard.",
        shown_default="none",
        example="",
    )
    alert_window: float = setting(
        60.0,
        "ALERT_WINDOW",
        minutes(0.01, 525600.0),
        "operations",
        "Minutes of run history the success rate is measured over (with at least the last ALERT_RUNS runs).",
    )
    alert_runs: int = setting(
        5,
        "ALERT_RUNS",
        integer(1, 10000),
        "operations",
        "The success rate also covers at least this many of the last runs, however old.",
    )
    alert_success_rate: float = setting(
        90.0,
        "ALERT_SUCCESS_RATE",
        percent(),
        "operations",
        "Alert when the success rate (chunks embedded / chunks tried) falls under this percentage (the guide's 90).",
    )
    alert_backlog_age: float = setting(
        30.0,
        "ALERT_BACKLOG_AGE",
        minutes(0.01, 525600.0),
        "operations",
        "Alert when the oldest pending chunk has waited longer than this many minutes.",
    )
    alert_watcher_silence: float = setting(
        5.0,
        "ALERT_WATCHER_SILENCE",
        minutes(0.01, 525600.0),
        "operations",
        "Alert when a running watcher has not reported for this many minutes.",
    )
    alert_cooldown: float = setting(
        10.0,
        "ALERT_COOLDOWN",
        minutes(0.0, 525600.0),
        "operations",
        "An alert is resolved (and the resolved message sent) once its condition has stayed clear this many "
        "minutes; so each incident is sent once, however it flaps.",
    )
    dashboard_timezone: str = setting(
        "Asia/Tokyo",
        "DASHBOARD_TIMEZONE",
        time_zone(),
        "operations",
        "Time zone of the dashboard's times and of its 'today' and 'this month'.",
    )
    dashboard_refresh: float = setting(
        10.0,
        "DASHBOARD_REFRESH",
        seconds(1.0, 3600.0),
        "operations",
        "Seconds between two refreshes of the open dashboard.",
    )
    dashboard_session_hours: float = setting(
        12.0,
        "DASHBOARD_SESSION_HOURS",
        quantity(0.01, 8760.0, "hours"),
        "operations",
        "Hours a dashboard sign-in (a cookie signed with a key derived from KNOWLEDGE_API_TOKEN) stays valid.",
    )

    log_file: Path = setting(
        Path("batch_embedding.log"),
        "EMBEDDING_LOG_FILE",
        path_value(),
        "logs",
        "The log file (rotating, UTF-8), relative to the working directory.",
    )

    warnings: tuple[str, ...] = ()  # what load_settings noticed without refusing (e.g. a misspelt name)

    def secrets(self) -> list[str]:
        """Every secret value, so that output filters can scrub them."""
        found = [
            s.reveal()
            for s in (
                self.google_api_key,
                self.database_url,
                self.supabase_key,
                self.knowledge_api_token,
                self.alert_webhook_url,
            )
            if s
        ]
        if self.database_url:
            found.extend(_password_in_url(self.database_url.reveal()))
        return [s for s in found if len(s) >= 4]

    @property
    def fixed_batch_size(self) -> int | None:
        return None if self.batch_size == "auto" else self.batch_size

    def describe(self) -> dict[str, object]:
        """Settings safe to print: secrets shown only as set / not set."""
        return {
            f.name: ("set" if getattr(self, f.name) else "not set")
            if f.name in SECRET_FIELDS
            else getattr(self, f.name)
            for f in fields(self)
        }


SECRET_FIELDS = frozenset(
    {"google_api_key", "database_url", "supabase_key", "knowledge_api_token", "alert_webhook_url"}
)


def _password_in_url(url: str) -> list[str]:
    """Passwords a connection string may carry: user:password@host, ?password=..., password=... ."""
    found = re.findall(r"^[a-z0-9+.-]+://[^:/@]*:([^@]+)@", url, re.IGNORECASE)
    found += re.findall(r"(?:^|[?&\s])password=([^&\s]+)", url, re.IGNORECASE)
    return found


def declared(cls: type = Settings) -> Iterator[tuple[Field[Any], Spec]]:
    """Every declared setting, in declaration order (nested dataclasses included)."""
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None:
            yield f, spec
        elif f.default_factory is not MISSING and is_dataclass(f.default_factory):
            yield from declared(f.default_factory)


def setting_names() -> set[str]:
    names = {spec.env for _, spec in declared()} | {a for _, spec in declared() for a in spec.aliases}
    return names | {DOTENV_SETTING}


# --- loading --------------------------------------------------------------------------------------


def _raw(env: Mapping[str, str], spec: Spec) -> tuple[str, str | None]:
    """The setting's text (None when unset or blank) and the name it was found under."""
    for name in (spec.env, *spec.aliases):
        value = env.get(name)
        if value is not None and value.strip():
            return name, value.strip()
    return spec.env, None


def _read(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            if f.default_factory is not MISSING and is_dataclass(f.default_factory):
                nested = f.default_factory
                values[f.name] = nested(**_read(nested, env))
            continue
        name, text = _raw(env, spec)
        if text is None:
            continue
        try:
            values[f.name] = spec.parse(text)
        except _Invalid as exc:
            raise SettingsError(name, str(exc)) from None
        except (ValueError, TypeError):
            shown = "(hidden)" if spec.parse.convert is Secret else repr(text)
            raise SettingsError(name, f"{shown} is not valid; expected {spec.parse.expected}") from None
    return values


def dotenv_path(environ: Mapping[str, str] | None = None) -> Path:
    """`.env` in the working directory, or the file BATCH_EMBEDDING_DOTENV names."""
    source = os.environ if environ is None else environ
    return Path(source.get(DOTENV_SETTING) or ".env")


def load_settings(env: Mapping[str, str] | None = None, dotenv_path_override: Path | None = None) -> Settings:
    """Merge `.env` (lowest priority) with the process environment (or `env`), validate, and freeze."""
    file_values: dict[str, str] = {}
    if env is None:
        path = dotenv_path_override or dotenv_path()
        if path.exists():
            file_values = {k: v for k, v in dotenv_values(path).items() if v is not None}
        env = {**file_values, **os.environ}
    values = _read(Settings, env)
    values["warnings"] = tuple(_misspelt(file_values if file_values else env))
    return _validated(Settings(**values))


def _misspelt(names: Mapping[str, str]) -> Iterator[str]:
    """A name that is not ours but looks like one of ours (EMBEDING_BATCH_SIZE) is probably a typo."""
    known = sorted(setting_names())
    for name in names:
        if name in known or not re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.88)
        if close:
            yield f"{name} is not a setting; did you mean {close[0]}? (it is ignored)"


def _validated(s: Settings) -> Settings:
    """Rules that involve several settings."""
    api_key = s.google_api_key.reveal() if s.google_api_key else None
    if api_key and not re.fullmatch(r"[\x21-\x7e]+", api_key):
        # The key travels in an HTTP header; never echo it, not even in this message.
        raise SettingsError("GOOGLE_API_KEY", "holds a space, line break or non-ASCII character; copy the key again")
    if s.provider is None and not api_key and (s.database_url or s.supabase_url):
        # The offline model is the default only on the embedded database: never embed a real database's
        # chunks with it by accident (its vectors can't be searched together with Gemini's).
        where = "DATABASE_URL" if s.database_url else "SUPABASE_URL"
        raise SettingsError(
            "GOOGLE_API_KEY",
            f"{where} is set but there is no API key: set GOOGLE_API_KEY (or GEMINI_API_KEY) to embed with Gemini, "
            "or EMBEDDING_PROVIDER=local to embed this database with the offline model on purpose",
        )
    provider: Provider = s.provider or ("gemini" if api_key else "local")
    if provider == "gemini" and not api_key:
        raise SettingsError(
            "GOOGLE_API_KEY",
            "EMBEDDING_PROVIDER=gemini needs an API key; set GOOGLE_API_KEY (or GEMINI_API_KEY) in the environment "
            "or .env, or set EMBEDDING_PROVIDER=local to embed offline",
        )
    if s.database_url and not re.match(r"^postgres(ql)?://", s.database_url.reveal()):
        raise SettingsError("DATABASE_URL", "must start with postgresql:// (a PostgreSQL connection string)")
    if s.database_url and s.database_url.reveal().split("://", 1)[1].split("/", 1)[0].count("@") > 1:
        # user:p@ss@host: the driver would take part of the password for the host and print it. Never
        # echo any of it here.
        raise SettingsError(
            "DATABASE_URL",
            "the user or password holds an '@': percent-encode it as %40 (and ':' as %3A, '/' as %2F)",
        )
    if s.gemini_base_url and not re.match(
        r"^https?://(\[[0-9a-fA-F:]+\]|[^/\s:\[\]]+)(:\d+)?(/\S*)?$", s.gemini_base_url
    ):
        raise SettingsError(
            "GOOGLE_GEMINI_BASE_URL",
            f"{s.gemini_base_url!r} is not an http(s) URL; use e.g. https://generativelanguage.googleapis.com "
            "or http://127.0.0.1:8089 (the simulator), or leave it empty for Google's",
        )
    if s.supabase_url and not re.match(r"^https?://", s.supabase_url):
        raise SettingsError(
            "SUPABASE_URL", "must start with https:// (your project's URL, e.g. https://xyz.supabase.co)"
        )
    if s.supabase_url and not s.supabase_key and not s.database_url:
        raise SettingsError("SUPABASE_KEY", "SUPABASE_URL is set but SUPABASE_KEY (the service-role key) is not")
    token = s.knowledge_api_token.reveal() if s.knowledge_api_token else None
    if token is not None and (len(token) < MIN_TOKEN_LENGTH or not re.fullmatch(r"[\x21-\x7e]+", token)):
        # Never echo the token, not even in this message.
        raise SettingsError(
            "KNOWLEDGE_API_TOKEN",
            f"must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    model = model_info(s.model)
    if provider == "gemini" and not model.allows_dimensions(s.dimensions):
        recommended = " / ".join(str(d) for d in model.recommended_dimensions)
        raise SettingsError(
            "EMBEDDING_DIMENSIONS",
            f"{s.model} outputs {model.min_dimensions} to {model.max_dimensions} dimensions, not {s.dimensions} "
            f"(Google recommends {recommended}); the vector column must have the same",
        )
    webhook = s.alert_webhook_url.reveal() if s.alert_webhook_url else None
    if webhook is not None and not _webhook_allowed(webhook):
        # The URL is a secret (Slack's carries its token in the path): never echo it.
        raise SettingsError(
            "ALERT_WEBHOOK_URL",
            "must be an https:// URL (or http:// to this host: 127.0.0.1, ::1 or localhost), without spaces",
        )
    if s.retry_cooldown_max < s.retry_cooldown:
        raise SettingsError(
            "EMBEDDING_RETRY_COOLDOWN_MAX",
            f"{s.retry_cooldown_max:g} must not be shorter than EMBEDDING_RETRY_COOLDOWN ({s.retry_cooldown:g})",
        )
    if s.chunk_overlap_chars >= s.chunk_target_chars:
        raise SettingsError(
            "CHUNK_OVERLAP_CHARS",
            f"{s.chunk_overlap_chars} must be smaller than CHUNK_TARGET_CHARS ({s.chunk_target_chars})",
        )
    return _replace(
        s,
        provider=provider,
        supabase_url=s.supabase_url.rstrip("/") if s.supabase_url else None,
        embedded_pg_dir=s.embedded_pg_dir.resolve(),
        max_input_tokens=s.max_input_tokens or model.max_input_tokens,
    )


def settings_for_model(s: Settings, provider: Provider, model: str, dimensions: int) -> Settings:
    """These settings with another embedding model (a model migration's target, or the model a cut-over
    put in the vector column): checked as load_settings checks them; EMBEDDING_MAX_INPUT_TOKENS follows
    the model unless it was set to something else than the old model's limit."""
    if provider == "gemini" and s.google_api_key is None:
        raise SettingsError("GOOGLE_API_KEY", f"{model} is a Gemini model: set GOOGLE_API_KEY (or GEMINI_API_KEY)")
    old, new = model_info(s.model), model_info(model)
    if provider == "gemini" and not new.allows_dimensions(dimensions):
        raise SettingsError(
            "EMBEDDING_DIMENSIONS",
            f"{model} outputs {new.min_dimensions} to {new.max_dimensions} dimensions, not {dimensions}",
        )
    limit = new.max_input_tokens if s.max_input_tokens == old.max_input_tokens else s.max_input_tokens
    return _replace(s, provider=provider, model=model, dimensions=dimensions, max_input_tokens=limit)


def _webhook_allowed(url: str) -> bool:
    from urllib.parse import urlsplit

    if not re.fullmatch(r"[\x21-\x7e]+", url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")


def _replace(s: Settings, **changes: Any) -> Settings:
    from dataclasses import replace

    return replace(s, **changes)


# --- documents generated from the declaration -----------------------------------------------------


def _default_text(f: Field[Any], spec: Spec) -> str:
    if spec.shown_default is not None:
        return spec.shown_default
    value = f.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def env_example() -> str:
    """The text of `.env.example`: every setting, grouped, with its help and default."""
    lines = [
        "# Copy to .env and fill in what you need. Every setting is optional: with none, the job runs offline on",
        "# an embedded PostgreSQL (./.data/postgres) and the local WordLlama provider.",
        "# Generated from modules/settings.py (python -m modules.settings --env-example); a test keeps it in step.",
    ]
    for group, title in GROUPS:
        lines += ["", f"# --- {title} ".ljust(100, "-")]
        for f, spec in declared():
            if spec.group != group:
                continue
            lines.append(f"# {spec.help}")
            shown = spec.example if spec.example is not None else _default_text(f, spec)
            lines.append(f"{'' if spec.example == '' else '# '}{spec.env}={shown}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for f, spec in declared():
        names = " / ".join(f"`{n}`" for n in (spec.env, *spec.aliases))
        rows.append(f"| {names} | `{_default_text(f, spec)}` | {spec.help} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modules.settings", description="Print documents made from the settings."
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--env-example", action="store_true", help="the text of .env.example")
    group.add_argument("--markdown", action="store_true", help="the README's settings table")
    args = parser.parse_args(argv)
    sys.stdout.write(env_example() if args.env_example else markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
