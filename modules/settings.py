"""One frozen, validated Settings object, read once from the environment and `.env`.

Every name here is part of the user-facing contract (see `.env.example`). A wrong value stops the
program at start with one line that names the setting and says how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, TypeVar

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent
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

Provider = Literal["gemini", "local"]
OverlongPolicy = Literal["truncate", "fail"]
T = TypeVar("T")


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


@dataclass(frozen=True)
class TableNames:
    """SQL identifiers for the host schema. Validated as plain identifiers; never interpolated raw."""

    schema: str = "public"
    chunks: str = "chunks"
    documents: str = "document_sources"
    content_column: str = "content"
    embedding_column: str = "embedding"


@dataclass(frozen=True)
class Settings:
    google_api_key: Secret | None = None
    gemini_base_url: str | None = None
    provider: Provider = "local"
    model: str = "gemini-embedding-001"
    dimensions: int = 768
    task_type: str = "RETRIEVAL_DOCUMENT"
    use_title: bool = True

    database_url: Secret | None = None
    supabase_url: str | None = None
    supabase_key: Secret | None = None
    embedded_pg_dir: Path = PROJECT_ROOT / ".data" / "postgres"
    tables: TableNames = field(default_factory=TableNames)

    auto_generate: bool = False
    batch_size: int | Literal["auto"] = 10
    retry_batch_size: int = 5
    max_retries: int = 3
    retry_delay: float = 2.0
    max_retry_delay: float = 60.0
    rate_limit_max_wait: float = 900.0
    lease_seconds: int = 300
    concurrency: int | Literal["auto"] = "auto"
    max_concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    quota_window: float = 60.0
    request_timeout: float = 60.0
    max_input_tokens: int = 2048
    overlong: OverlongPolicy = "truncate"
    cache: bool = True

    log_file: Path = PROJECT_ROOT / "batch_embedding.log"
    upload_max_bytes: int = 20_000_000
    chunk_target_chars: int = 500
    chunk_overlap_chars: int = 50

    def secrets(self) -> list[str]:
        """Every secret value, so that output filters can scrub them."""
        found = [s.reveal() for s in (self.google_api_key, self.database_url, self.supabase_key) if s]
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


SECRET_FIELDS = frozenset({"google_api_key", "database_url", "supabase_key"})


def _password_in_url(url: str) -> list[str]:
    """Passwords a connection string may carry: user:password@host, ?password=..., password=... ."""
    found = re.findall(r"^[a-z0-9+.-]+://[^:/@]*:([^@]+)@", url, re.IGNORECASE)
    found += re.findall(r"(?:^|[?&\s])password=([^&\s]+)", url, re.IGNORECASE)
    return found


class _Reader:
    """Reads raw strings from the merged environment and turns them into typed, checked values."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str | None = None) -> str | None:
        return self.raw(name) or default

    def parsed(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError):
            raise SettingsError(name, f"{value!r} is not valid; expected {expected}") from None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.parsed(name, default, int, f"a whole number from {low} to {high}")
        if not low <= value <= high:
            raise SettingsError(name, f"{value} is out of range; expected a whole number from {low} to {high}")
        return value

    def optional_integer(self, name: str, low: int) -> int | None:
        value = self.parsed(name, None, int, f"a whole number of at least {low}, or empty")
        if value is not None and value < low:
            raise SettingsError(name, f"{value} is out of range; expected at least {low}, or empty to learn it")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.parsed(name, default, float, f"a number of seconds from {low:g} to {high:g}")
        if not low <= value <= high:
            raise SettingsError(name, f"{value:g} is out of range; expected from {low:g} to {high:g}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(name, f"{value!r} is not valid; expected true or false")

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in options and value not in options:
            raise SettingsError(name, f"{value!r} is not valid; expected one of: {', '.join(options)}")
        return value.lower() if value.lower() in options else value

    def auto_or_integer(self, name: str, default: int | Literal["auto"], low: int, high: int) -> int | Literal["auto"]:
        value = self.raw(name)
        if value is not None and value.lower() == "auto":
            return "auto"
        if value is None:
            return default
        return self.integer(name, 0, low, high)

    def identifier(self, name: str, default: str) -> str:
        value = self.raw(name) or default
        if not _IDENTIFIER.match(value):
            raise SettingsError(
                name,
                f"{value!r} is not a plain SQL identifier; use letters, digits and underscores only "
                "(starting with a letter or underscore, at most 63 characters)",
            )
        return value


def load_settings(env: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> Settings:
    """Merge `.env` (lowest priority) with the process environment (or `env`), validate, and freeze."""
    if env is None:
        path = dotenv_path or Path(os.environ.get("BATCH_EMBEDDING_DOTENV", PROJECT_ROOT / ".env"))
        file_values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.exists() else {}
        env = {**file_values, **os.environ}
    read = _Reader(env)

    api_key = read.text("GOOGLE_API_KEY") or read.text("GEMINI_API_KEY")
    if api_key and not re.fullmatch(r"[\x21-\x7e]+", api_key):
        # The key travels in an HTTP header; never echo it, not even in this message.
        name = "GOOGLE_API_KEY" if read.text("GOOGLE_API_KEY") else "GEMINI_API_KEY"
        raise SettingsError(name, "holds a space, line break or non-ASCII character; copy the key again")
    provider = read.choice("EMBEDDING_PROVIDER", "gemini" if api_key else "local", ("gemini", "local"))
    if provider == "gemini" and not api_key:
        raise SettingsError(
            "GOOGLE_API_KEY",
            "EMBEDDING_PROVIDER=gemini needs an API key; set GOOGLE_API_KEY (or GEMINI_API_KEY) in the environment "
            "or .env, or set EMBEDDING_PROVIDER=local to embed offline",
        )

    model = (read.text("EMBEDDING_MODEL") or "gemini-embedding-001").removeprefix("models/")
    if not re.match(r"^[a-z0-9][a-z0-9.\-_]*$", model):
        raise SettingsError("EMBEDDING_MODEL", f"{model!r} is not a model name like gemini-embedding-001")

    database_url = read.text("DATABASE_URL")
    if database_url and not re.match(r"^postgres(ql)?://", database_url):
        raise SettingsError("DATABASE_URL", "must start with postgresql:// (a PostgreSQL connection string)")
    supabase_url = read.text("SUPABASE_URL")
    supabase_key = read.text("SUPABASE_KEY") or read.text("SUPABASE_SERVICE_ROLE_KEY")
    if supabase_url and not re.match(r"^https?://", supabase_url):
        raise SettingsError(
            "SUPABASE_URL", "must start with https:// (your project's URL, e.g. https://xyz.supabase.co)"
        )
    if supabase_url and not supabase_key and not database_url:
        raise SettingsError("SUPABASE_KEY", "SUPABASE_URL is set but SUPABASE_KEY (the service-role key) is not")

    batch_size = read.auto_or_integer("EMBEDDING_BATCH_SIZE", 10, 1, GEMINI_MAX_BATCH)
    retry_batch = read.integer("EMBEDDING_RETRY_BATCH_SIZE", 5, 1, GEMINI_MAX_BATCH)
    dimensions = read.integer("EMBEDDING_DIMENSIONS", 768, 1, 16000)
    chunk_target = read.integer("CHUNK_TARGET_CHARS", 500, 50, 20_000)
    chunk_overlap = read.integer("CHUNK_OVERLAP_CHARS", 50, 0, 10_000)
    if chunk_overlap >= chunk_target:
        raise SettingsError(
            "CHUNK_OVERLAP_CHARS", f"{chunk_overlap} must be smaller than CHUNK_TARGET_CHARS ({chunk_target})"
        )

    return Settings(
        google_api_key=Secret(api_key) if api_key else None,
        gemini_base_url=read.text("GOOGLE_GEMINI_BASE_URL"),
        provider="gemini" if provider == "gemini" else "local",
        model=model,
        dimensions=dimensions,
        task_type=read.choice("EMBEDDING_TASK_TYPE", "RETRIEVAL_DOCUMENT", TASK_TYPES).upper(),
        use_title=read.boolean("EMBEDDING_USE_TITLE", True),
        database_url=Secret(database_url) if database_url else None,
        supabase_url=supabase_url.rstrip("/") if supabase_url else None,
        supabase_key=Secret(supabase_key) if supabase_key else None,
        embedded_pg_dir=Path(read.text("EMBEDDED_PG_DIR") or PROJECT_ROOT / ".data" / "postgres").resolve(),
        tables=TableNames(
            schema=read.identifier("DB_SCHEMA", "public"),
            chunks=read.identifier("CHUNKS_TABLE", "chunks"),
            documents=read.identifier("DOCUMENTS_TABLE", "document_sources"),
            content_column=read.identifier("CHUNKS_CONTENT_COLUMN", "content"),
            embedding_column=read.identifier("CHUNKS_EMBEDDING_COLUMN", "embedding"),
        ),
        auto_generate=read.boolean("AUTO_GENERATE_EMBEDDINGS", False),
        batch_size=batch_size,
        retry_batch_size=retry_batch,
        max_retries=read.integer("EMBEDDING_MAX_RETRIES", 3, 0, 20),
        retry_delay=read.number("EMBEDDING_RETRY_DELAY", 2.0, 0.0, 600.0),
        max_retry_delay=read.number("EMBEDDING_MAX_RETRY_DELAY", 60.0, 0.0, 3600.0),
        rate_limit_max_wait=read.number("EMBEDDING_RATE_LIMIT_MAX_WAIT", 900.0, 0.0, 86400.0),
        lease_seconds=read.integer("EMBEDDING_LEASE_SECONDS", 300, 1, 86400),
        concurrency=read.auto_or_integer("EMBEDDING_CONCURRENCY", "auto", 1, 64),
        max_concurrency=read.integer("EMBEDDING_MAX_CONCURRENCY", 8, 1, 64),
        rpm=read.optional_integer("EMBEDDING_RPM", 1),
        tpm=read.optional_integer("EMBEDDING_TPM", 1),
        quota_window=read.number("EMBEDDING_QUOTA_WINDOW", 60.0, 0.01, 86400.0),
        request_timeout=read.number("EMBEDDING_REQUEST_TIMEOUT", 60.0, 0.1, 3600.0),
        max_input_tokens=read.integer("EMBEDDING_MAX_INPUT_TOKENS", 2048, 1, 1_000_000),
        overlong="fail"
        if read.choice("EMBEDDING_OVERLONG", "truncate", ("truncate", "fail")) == "fail"
        else "truncate",
        log_file=Path(read.text("EMBEDDING_LOG_FILE") or PROJECT_ROOT / "batch_embedding.log"),
        cache=read.boolean("EMBEDDING_CACHE", True),
        upload_max_bytes=read.integer("UPLOAD_MAX_BYTES", 20_000_000, 1, 1_000_000_000),
        chunk_target_chars=chunk_target,
        chunk_overlap_chars=chunk_overlap,
    )
