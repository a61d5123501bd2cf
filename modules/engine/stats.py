"""Run statistics and the summary lines that speak the guide's language (Japanese, with its emoji).

One RunStats object per run: the log, the CLI's final table, progress and JSON all read from it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from modules.logs import get_logger

log = get_logger(__name__)


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
