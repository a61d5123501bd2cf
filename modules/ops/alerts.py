"""The alert rules, evaluated against the run history and the queue's SQL counts (embq_health), never against
counters of a process's own, so that every process that evaluates (watchers, the knowledge app, a plain run
that ends) comes to the same answer, and the incident's state in the database (embq_alerts) makes each alert
go out once per incident:

- success_rate: chunks embedded / chunks tried over the runs of the last ALERT_WINDOW minutes (and at least
  the last ALERT_RUNS runs) is under ALERT_SUCCESS_RATE percent;
- backlog_age: the oldest chunk waiting for a vector has waited longer than ALERT_BACKLOG_AGE minutes;
- api_unavailable: the last run that used the API ended with it unavailable (outage, quota, key);
- watcher_silent:<worker>: a running watcher has not reported for ALERT_WATCHER_SILENCE minutes.

A condition that holds opens an incident (sent once); one that has stayed clear for ALERT_COOLDOWN minutes
resolves it (a "resolved" message follows, once). Summaries are made of numbers and the rules' own words:
never chunk text, never an error message, never a secret.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from modules.errors import StoreError
from modules.logs import get_logger
from modules.ops.webhook import TITLES, WebhookSender, duration_text
from modules.settings import Settings
from modules.stores.ops_base import Health, OperationsStore

log = get_logger(__name__)
__all__ = ["TITLES", "AlertMonitor", "AlertRules", "Firing", "alert_monitor", "firing"]
RETRY_SECONDS = 60.0  # a notification taken by a process that did not confirm it is taken again after this


@dataclass(frozen=True)
class AlertRules:
    window_minutes: float = 60.0
    last_runs: int = 5
    success_rate: float = 90.0
    backlog_minutes: float = 30.0
    silence_minutes: float = 5.0
    cooldown_minutes: float = 10.0

    @classmethod
    def from_settings(cls, s: Settings) -> AlertRules:
        return cls(
            s.alert_window,
            s.alert_runs,
            s.alert_success_rate,
            s.alert_backlog_age,
            s.alert_watcher_silence,
            s.alert_cooldown,
        )


@dataclass(frozen=True)
class Firing:
    key: str
    kind: str
    summary: str
    details: dict[str, Any]


def firing(health: Health, rules: AlertRules) -> list[Firing]:
    """The alerts whose condition holds now."""
    found: list[Firing] = []
    rate = health.success_rate
    if rate is not None and rate < rules.success_rate:
        found.append(
            Firing(
                "success_rate",
                "success_rate",
                f"成功率が {rate:.1f}% に下がっています (しきい値 {rules.success_rate:g}%): "
                f"直近{rules.window_minutes:g}分・直近{rules.last_runs}回の実行で "
                f"埋め込み {health.sample_embedded}件 / 失敗 {health.sample_failed}件",
                {
                    "success_rate": round(rate, 2),
                    "threshold": rules.success_rate,
                    "embedded": health.sample_embedded,
                    "failed": health.sample_failed,
                    "runs": health.sample_runs,
                    "window_minutes": rules.window_minutes,
                },
            )
        )
    age = health.oldest_pending_age_seconds
    if age is not None and age > rules.backlog_minutes * 60:
        found.append(
            Firing(
                "backlog_age",
                "backlog_age",
                f"最も古い未処理チャンクが {duration_text(age)} 待っています (しきい値 {rules.backlog_minutes:g}分)",
                {"oldest_pending_age_seconds": round(age, 1), "threshold_minutes": rules.backlog_minutes},
            )
        )
    if health.last_outcome == "api_unavailable":
        when = health.last_outcome_at.isoformat(timespec="seconds") if health.last_outcome_at else "-"
        found.append(
            Firing(
                "api_unavailable",
                "api_unavailable",
                f"埋め込みAPIを利用できず実行が中断しました (障害・クォータ切れ・キー; {when}, ワーカー "
                f"{health.last_outcome_worker})。チャンクは未処理に戻してあります",
                {"worker": health.last_outcome_worker, "at": when},
            )
        )
    for watcher in health.silent_watchers:
        found.append(
            Firing(
                f"watcher_silent:{watcher.worker}",
                "watcher_silent",
                f"監視ワーカー {watcher.worker} からの報告が {duration_text(watcher.silent_seconds)} 途絶えています "
                f"(しきい値 {rules.silence_minutes:g}分)",
                {"worker": watcher.worker, "silent_seconds": round(watcher.silent_seconds, 1)},
            )
        )
    return found


class AlertMonitor:
    def __init__(self, store: OperationsStore, rules: AlertRules, sender: WebhookSender | None) -> None:
        self.store = store
        self.rules = rules
        self.sender = sender

    async def evaluate(self) -> list[Firing]:
        """Open, keep or resolve the incidents, then send what is to be sent. Returns what is firing."""
        r = self.rules
        health = await self.store.health(r.window_minutes, r.last_runs, r.silence_minutes * 60)
        now = firing(health, r)
        for alert in now:
            if await self.store.alert_raise(alert.key, alert.kind, alert.summary, alert.details):
                log.warning("🚨 アラート発生: %s", alert.summary)
        resolved = await self.store.alert_settle([a.key for a in now], r.cooldown_minutes * 60)
        if resolved:
            log.info("✅ アラート解決: %d件", resolved)
        if self.sender is not None:
            await self.deliver()
        return now

    async def deliver(self) -> int:
        sent = 0
        assert self.sender is not None
        for alert in await self.store.alert_claim(RETRY_SECONDS):
            if await self.sender.send(alert):
                await self.store.alert_delivered(alert.id, alert.state)
                sent += 1
        return sent

    async def evaluate_safely(self) -> None:
        """Evaluate, and never let a failure reach the caller (a run, a watcher, the app)."""
        try:
            await asyncio.wait_for(self.evaluate(), 30)
        except (StoreError, TimeoutError) as exc:
            log.warning("🚨 アラートを評価できませんでした (次回再試行): %s", exc)
        except Exception as exc:  # a bug here must not stop the work it watches
            log.warning("🚨 アラートの評価で予期しないエラー: %s: %s", type(exc).__name__, exc)

    async def run_forever(self, interval: float) -> None:
        while True:
            await self.evaluate_safely()
            await asyncio.sleep(interval)


def alert_monitor(store: OperationsStore, settings: Settings) -> AlertMonitor:
    sender = WebhookSender(settings.alert_webhook_url, settings.secrets()) if settings.alert_webhook_url else None
    return AlertMonitor(store, AlertRules.from_settings(settings), sender)
