"""Posting an alert to ALERT_WEBHOOK_URL: Slack-compatible JSON (`text`, which Slack, Mattermost and
Rocket.Chat show as the message), plus a structured `alert` object for any other HTTPS receiver. A failed
post is logged (the URL is a secret: never in a log line) and tried again at a later evaluation; it never
raises. Nothing in a payload comes from chunk text or from an error message: only the rule's own words and
numbers (modules/ops/alerts.py), scrubbed of every secret all the same."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx

from modules.logs import get_logger, scrub
from modules.settings import Secret
from modules.stores.ops_base import AlertRow

log = get_logger(__name__)
TITLE = "[バッチエンベディング]"
TITLES = {  # each alert rule's name (modules/ops/alerts.py), in messages and on the dashboard
    "success_rate": "成功率の低下",
    "backlog_age": "未処理の滞留",
    "api_unavailable": "埋め込みAPI利用不可",
    "watcher_silent": "ワーカーの報告途絶",
}


def payload(alert: AlertRow, secrets: list[str]) -> dict[str, Any]:
    resolved = alert.state == "resolved"
    title = TITLES.get(alert.kind, alert.kind)
    if resolved and alert.resolved_at is not None:
        lasted = duration_text((alert.resolved_at - alert.opened_at).total_seconds())
        text = (
            f"✅ 解決 {TITLE} {title} は解消しました ({lasted}間, "
            f"{alert.opened_at:%Y-%m-%d %H:%M:%S %Z} 〜 {alert.resolved_at:%H:%M:%S %Z})。発生時: {alert.summary}"
        )
    else:
        text = f"🚨 発生 {TITLE} {title}: {alert.summary}"
    body = {
        "text": text,
        "alert": {
            "key": alert.alert_key,
            "kind": alert.kind,
            "status": "resolved" if resolved else "firing",
            "summary": alert.summary,
            "opened_at": alert.opened_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "details": alert.details,
            "host": socket.gethostname(),
        },
    }
    return json.loads(scrub(json.dumps(body, ensure_ascii=False), secrets))  # type: ignore[no-any-return]


class WebhookSender:
    def __init__(self, url: Secret, secrets: list[str], *, timeout: float = 10.0) -> None:
        self._url = url
        self._secrets = secrets
        self._timeout = timeout

    async def send(self, alert: AlertRow) -> bool:
        body = payload(alert, self._secrets)
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                answer = await client.post(self._url.reveal(), json=body)
        except httpx.HTTPError as exc:
            log.warning("📮 アラートの送信に失敗しました (次回の確認で再送します): %s", scrub(type(exc).__name__, []))
            return False
        if 200 <= answer.status_code < 300:
            log.info("📮 アラートを送信しました: %s (%s)", alert.alert_key, body["alert"]["status"])
            return True
        log.warning("📮 アラートの送信先が %d を返しました (次回の確認で再送します)", answer.status_code)
        return False


def duration_text(seconds: float) -> str:
    """A duration in words: 45秒, 12分, 3.5時間, 2.0日."""
    if seconds < 120:
        return f"{seconds:.0f}秒"
    if seconds < 7200:
        return f"{seconds / 60:.0f}分"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}時間"
    return f"{seconds / 86400:.1f}日"
