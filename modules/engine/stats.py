"""Run statistics and the summary lines that speak the guide's language (Japanese, with its emoji).

One RunStats object per run: the log, the CLI's final table, progress and JSON all read from it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from modules.logs import get_logger

log = get_logger(__name__)


Outcome = Literal["ok", "failed", "api_unavailable", "database_lost", "stopped"]
RETRY_COMMAND = "python batch_embedding_processor.py --retry-only"
# How tokens are counted here (no API call): the rule of modules.text.estimate_tokens
ESTIMATE_METHOD = "local estimate: 1 token per non-ASCII character, 1 per 4 ASCII characters"


@dataclass
class RunStats:
    total: int = 0  # chunks selected for this run (known at start; grows if more arrive)
    embedded: int = 0
    failed: int = 0
    skipped: int = 0  # no longer ours to write (another worker took the lease)
    retries: int = 0
    api_calls: int = 0
    tokens_sent: int = 0  # estimated tokens of the texts the API answered with vectors (what is billed)
    batch_tokens_sent: int = 0  # of tokens_sent, those submitted in Batch API jobs (billed at the Batch price)
    rate_limited: int = 0
    cache_hits: int = 0  # chunks whose vector came from the cache: no API call
    batches: int = 0
    splits: int = 0
    deferred: int = 0  # batches given back untouched because the API was failing
    batch_jobs_submitted: int = 0  # Batch API jobs this run submitted (--batch-api)
    batch_chunks_submitted: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    aborted: str | None = None  # why the run stopped early, if it did
    api_unavailable: str | None = None  # when the API (or the database) could not be used: when to try again
    database_lost: bool = False  # the database went away mid-run: results not written are lost, leases expire
    limited: bool = False  # --limit: chunks beyond it are left pending on purpose
    retry_only: bool = False  # --retry-only: pending chunks are not this run's to touch
    scope_failed: int = 0  # at the end: chunks recorded failed in the run's scope (earlier runs' too)
    scope_pending: int = 0  # at the end: chunks still pending in the run's scope
    model: str = ""  # the model the vectors are made by (its price prices the tokens)
    usd_per_million_tokens: float | None = 0.0  # its online price; None: unknown (a model not in the table)
    usd_per_million_tokens_batch: float | None = 0.0  # its Batch API price

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def processed(self) -> int:
        return self.embedded + self.failed + self.skipped

    @property
    def earlier_failures(self) -> int:
        """Failures in scope that this run did not record (a plain run does not retry them)."""
        return max(0, self.scope_failed - self.failed)

    @property
    def success_rate(self) -> float:
        """Embedded by this run, against everything in scope that is not embedded because it failed:
        never 100% while failures remain in scope."""
        done = self.embedded + max(self.failed, self.scope_failed)
        return 100.0 * self.embedded / done if done else 100.0

    @property
    def cost_usd(self) -> float | None:
        """What the tokens sent cost at the model's list prices: those of Batch API jobs at the Batch
        price, the others at the online price (None when a price is unknown)."""
        online, batch = self.usd_per_million_tokens, self.usd_per_million_tokens_batch
        if online is None or (self.batch_tokens_sent and batch is None):
            return None
        batch_cost = self.batch_tokens_sent * (batch or 0.0)
        return round(((self.tokens_sent - self.batch_tokens_sent) * online + batch_cost) / 1_000_000, 6)

    @property
    def cost_usd_if_online(self) -> float | None:
        """What the same tokens would have cost sent online: the comparison for the Batch API route."""
        price = self.usd_per_million_tokens
        return None if price is None else round(self.tokens_sent * price / 1_000_000, 6)

    @property
    def chunks_per_second(self) -> float:
        return self.embedded / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def outcome(self) -> Outcome:
        if self.database_lost:
            return "database_lost"
        if self.api_unavailable is not None:
            return "api_unavailable"
        if self.aborted is not None:
            return "stopped"
        if self.failed or self.scope_failed:
            return "failed"
        if self.scope_pending and not (self.limited or self.retry_only):
            return "failed"
        return "ok"

    @property
    def ok(self) -> bool:
        """Nothing in the run's scope is failed, or pending that the run was to embed."""
        return self.outcome == "ok"

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("started")
        data.pop("finished")
        data.update(
            outcome=self.outcome,
            earlier_failures=self.earlier_failures,
            elapsed_seconds=round(self.elapsed, 3),
            success_rate=round(self.success_rate, 2),
            chunks_per_second=round(self.chunks_per_second, 2),
            cost_usd=self.cost_usd,
            cost_usd_if_online=self.cost_usd_if_online,
            tokens_estimate_method=ESTIMATE_METHOD,
        )
        return data


def _cost_line(stats: RunStats) -> str:
    price, cost = stats.usd_per_million_tokens, stats.cost_usd
    if price is None or cost is None:
        return f"💰 推定コスト: 不明 ({stats.model} の料金は未登録)"
    if price == 0:
        return "💰 推定コスト: $0 (ローカルモデル)"
    online_equivalent = stats.cost_usd_if_online
    if stats.batch_tokens_sent and online_equivalent is not None:
        batch_price = stats.usd_per_million_tokens_batch or 0.0
        return (
            f"💰 推定コスト: ${cost:.4f} (うち Batch API {stats.batch_tokens_sent} トークン"
            f" ${batch_price:g}/100万トークン; すべてオンラインなら ${online_equivalent:.4f})"
        )
    return f"💰 推定コスト: ${cost:.4f} ({stats.model} オンライン料金 ${price:g}/100万トークン)"


_HEADLINES: dict[Outcome, str] = {
    "ok": "🎉 バッチエンベディング生成完了 - 最終統計",
    "failed": "⚠️ バッチエンベディング生成終了 (失敗または未処理が残っています) - 最終統計",
    "api_unavailable": "🛑 バッチエンベディング生成中断 (埋め込みAPIを利用できません) - 最終統計",
    "database_lost": "🛑 バッチエンベディング生成中断 (データベースに接続できません) - 最終統計",
    "stopped": "🛑 バッチエンベディング生成中断 - 最終統計",
}


def log_final_statistics(stats: RunStats) -> None:
    outcome = stats.outcome
    (log.info if outcome == "ok" else log.warning)(_HEADLINES[outcome])
    log.info("📊 総チャンク数: %d", stats.total)
    log.info("✅ 成功: %d", stats.embedded)
    log.info("❌ 失敗: %d", stats.failed)
    if stats.skipped:
        log.info("⏭️ スキップ (他のワーカーが処理): %d", stats.skipped)
    log.info("🔁 リトライ: %d回 (レート制限 429: %d回)", stats.retries, stats.rate_limited)
    if stats.embedded + stats.failed + stats.scope_failed:
        log.info("📈 成功率: %.1f%%", stats.success_rate)
    else:
        log.info("📈 成功率: - (処理したチャンクはありません)")
    log.info("⏱️ 処理時間: %.1f秒 | ⚡ 処理速度: %.1f チャンク/秒", stats.elapsed, stats.chunks_per_second)
    calls, tokens = stats.api_calls, stats.tokens_sent
    log.info("🌐 API呼び出し: %d回 | 送信トークン (推定): %d | %s", calls, tokens, _cost_line(stats))
    if stats.cache_hits:
        log.info("♻️ キャッシュ再利用: %dチャンク (APIを呼ばずに完了)", stats.cache_hits)
    if stats.earlier_failures:
        log.warning(
            "💡 以前の実行で失敗したチャンクが %d件残っています。再処理: %s", stats.earlier_failures, RETRY_COMMAND
        )
    elif stats.failed:
        log.warning("💡 失敗したチャンク %d件の再処理: %s", stats.failed, RETRY_COMMAND)
    if (
        stats.scope_pending
        and not (stats.limited or stats.retry_only)
        and stats.outcome not in ("api_unavailable", "database_lost")
    ):
        log.warning("⏳ 未処理のまま残ったチャンク: %d件", stats.scope_pending)
    if stats.database_lost:
        log.error("🛑 データベースに接続できなくなったため中断しました: %s", stats.aborted)
        log.error("↩️ 書き込めなかったチャンクは失敗として記録していません (リースが切れれば次の実行で再処理されます)")
        log.error("⏰ 再実行の目安: %s", stats.api_unavailable)
    elif stats.api_unavailable is not None:
        log.error("🛑 埋め込みAPIを利用できないため中断しました: %s", stats.aborted)
        log.error("↩️ 処理中だったチャンクは未処理に戻しました (失敗としては記録していません)")
        log.error("⏰ 再実行の目安: %s", stats.api_unavailable)
    elif stats.aborted:
        log.error("🛑 処理を中断しました: %s", stats.aborted)
