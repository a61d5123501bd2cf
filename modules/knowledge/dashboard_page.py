"""The dashboard's HTML, rendered on the server (no CDN, no framework: users run it on intranets without
internet). Every value that comes from the database is escaped. The page is the panel plus a frame; the
frame's script (static/dashboard.js, shipped in the package) fetches the panel again every
DASHBOARD_REFRESH seconds, and without script a meta refresh does it. The throughput chart is inline SVG."""

from __future__ import annotations

from datetime import datetime
from html import escape

from modules.cli.status_view import age_text
from modules.knowledge.dashboard_data import DashboardData
from modules.ops.alerts import TITLES
from modules.stores.ops_base import Totals

_HEALTH = {
    "ok": ("🟢", "正常", "未処理・失敗・アラートはありません"),
    "warn": ("🟡", "注意", "失敗したチャンク、別モデルのベクトル、または報告の途絶えたワーカーがあります"),
    "bad": ("🔴", "要対応", "発生中のアラートがあります"),
}
_OUTCOMES = {
    "ok": "✅ 成功",
    "failed": "⚠️ 失敗あり",
    "api_unavailable": "🛑 API利用不可",
    "database_lost": "🗄️ DB切断",
    "stopped": "⏹️ 停止",
    "error": "❌ エラー",
    "lost": "💀 消失",
}
_KINDS = {"run": "実行", "watch": "監視"}
_SCOPES = {"pending": "未処理", "failed": "失敗の再処理", "watch": "監視"}
_ALERT_KINDS = TITLES


def e(value: object) -> str:
    return escape(str(value), quote=True)


def render_page(panel: str, refresh_seconds: float, *, signed_in: bool) -> str:
    logout = (
        '<form method="post" action="/dashboard/logout" class="logout"><button type="submit">ログアウト</button></form>'
        if signed_in
        else ""
    )
    return f"""<!doctype html>
<html lang="ja">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>エンベディング運用ダッシュボード</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
<noscript><meta http-equiv="refresh" content="{int(max(5, refresh_seconds * 3))}"></noscript>
<script src="/dashboard/static/dashboard.js" defer></script>
</head>
<body data-refresh="{e(int(refresh_seconds * 1000))}">
<header>
<h1>🧠 エンベディング運用ダッシュボード</h1>
{logout}
</header>
<main id="panel" aria-live="polite">
{panel}
</main>
<footer>{e(int(refresh_seconds))}秒ごとに自動更新 · バッチエンベディング</footer>
</body>
</html>
"""


def render_panel(d: DashboardData) -> str:
    return "\n".join(
        [
            _summary(d),
            _cards(d),
            _backlog_bar(d),
            _section("⚡ 処理量と 429 (直近24時間, 1時間ごと)", _chart(d)),
            _section("💴 トークンと費用", _money(d)),
            _section("🚨 発生中のアラート", _alerts(d)),
            _migration(d),
            _section("📮 Batch API ジョブ", _batch_jobs(d)),
            _section("👀 監視ワーカー", _workers(d)),
            _section("📄 文書ごとの進捗", _documents(d)),
            _section("🧾 よくあるエラー", _errors(d)),
            _section("🗒️ 最近の実行", _runs(d)),
        ]
    )


def _section(title: str, body: str) -> str:
    return f"<section><h2>{e(title)}</h2>\n{body}\n</section>"


def _when(d: DashboardData, moment: datetime | None) -> str:
    if moment is None:
        return "-"
    local = moment.astimezone(d.zone)
    if local.date() == d.now.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%m/%d %H:%M")


def _summary(d: DashboardData) -> str:
    mark, word, why = _HEALTH[d.health]
    oldest = d.status.oldest_pending_age_seconds
    waiting = f"最古の未処理: {age_text(oldest)}前" if oldest is not None else "未処理のチャンクはありません"
    return (
        f'<div class="summary {e(d.health)}" id="health" data-health="{e(d.health)}">'
        f'<span class="light">{mark}</span><div><strong>{e(word)}</strong> — {e(why)}'
        f'<div class="sub">⏱️ <span id="oldest-pending">{e(waiting)}</span> · 👀 稼働中のワーカー '
        f'<span id="active-watchers">{len(d.active_watchers)}</span> · 🚨 アラート '
        f'<span id="open-alerts">{len(d.open_alerts)}</span> · 更新 {e(d.now.strftime("%Y-%m-%d %H:%M:%S %Z"))}'
        f"</div></div></div>"
    )


def _cards(d: DashboardData) -> str:
    s = d.status
    cards = [
        ("embedded", "✅ 埋め込み済み", s.embedded, f"{s.percent_embedded:.1f}%"),
        ("pending", "⏳ 未処理", s.pending, "次の実行・監視で処理"),
        ("cooling-down", "🧊 クールダウン中", s.cooling_down, "時間をおいて自動で再試行"),
        ("quarantined", "🚫 隔離", s.quarantined, f"{d.max_attempts}回失敗: --retry-only 待ち"),
        ("in-progress", "🔄 処理中", s.in_progress, "ワーカーが処理しています"),
        ("other-model", "❗ 別モデル", s.other_model, "再埋め込みが必要"),
    ]
    items = "".join(
        f'<div class="card {key}" id="card-{key}"><div class="label">{e(label)}</div>'
        f'<div class="num">{value:,}</div><div class="note">{e(note)}</div></div>'
        for key, label, value, note in cards
    )
    return f'<div class="cards" aria-label="チャンクの状態 (総数 {s.total:,})">{items}</div>'


def _backlog_bar(d: DashboardData) -> str:
    s = d.status
    if not s.total:
        return '<p class="empty">チャンクはまだありません。</p>'
    parts = [
        ("embedded", s.embedded - s.other_model),
        ("other-model", s.other_model),
        ("in-progress", s.in_progress),
        ("pending", s.pending),
        ("cooling-down", s.cooling_down),
        ("quarantined", s.quarantined),
    ]
    segments = "".join(
        f'<span class="seg {key}" style="width:{100 * value / s.total:.2f}%"></span>' for key, value in parts if value
    )
    return f'<div class="bar" role="img" aria-label="総チャンク数 {s.total:,} の内訳">{segments}</div>'


def _chart(d: DashboardData) -> str:
    points = d.series
    if not any(p.embedded or p.failed or p.rate_limited for p in points):
        return '<p class="empty">直近24時間の実行はありません。</p>'
    width, height, left, bottom, top = 720, 220, 44, 28, 12
    plot_w, plot_h = width - left - 40, height - bottom - top
    peak = max(max(p.embedded + p.failed for p in points), 1)
    peak_429 = max(max(p.rate_limited for p in points), 1)
    step = plot_w / len(points)
    bars, marks, labels = [], [], []
    for i, p in enumerate(points):
        x = left + i * step
        ok_h = plot_h * p.embedded / peak
        bad_h = plot_h * p.failed / peak
        base = top + plot_h
        bars.append(
            f'<rect class="ok" x="{x + 2:.1f}" y="{base - ok_h:.1f}" width="{step - 4:.1f}" height="{ok_h:.1f}">'
            f"<title>{e(p.bucket.astimezone(d.zone).strftime('%H時'))}: 埋め込み {p.embedded:,} / "
            f"失敗 {p.failed:,} / 429 {p.rate_limited:,}</title></rect>"
        )
        if p.failed:
            bars.append(
                f'<rect class="ng" x="{x + 2:.1f}" y="{base - ok_h - bad_h:.1f}" width="{step - 4:.1f}" '
                f'height="{bad_h:.1f}"></rect>'
            )
        y429 = top + plot_h - plot_h * p.rate_limited / peak_429
        marks.append(f"{x + step / 2:.1f},{y429:.1f}")
        if i % 3 == 0:
            labels.append(
                f'<text x="{x + step / 2:.1f}" y="{height - 8}" class="tick">'
                f"{e(p.bucket.astimezone(d.zone).strftime('%H時'))}</text>"
            )
    total_ok = sum(p.embedded for p in points)
    total_429 = sum(p.rate_limited for p in points)
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="1時間ごとの埋め込み件数と429の回数">'
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"></line>'
        f'<text x="{left - 6}" y="{top + 8}" class="tick end">{peak:,}</text>'
        f'<text x="{left - 6}" y="{top + plot_h}" class="tick end">0</text>'
        f'<text x="{left + plot_w + 4}" y="{top + 8}" class="tick rl">{peak_429:,}</text>'
        f"{''.join(bars)}"
        f'<polyline class="rl" points="{" ".join(marks)}"></polyline>'
        f"{''.join(labels)}</svg>"
        f'<p class="legend"><span class="key ok"></span>埋め込み (24時間で '
        f'<span id="chart-embedded">{total_ok:,}</span>件) <span class="key ng"></span>失敗 '
        f'<span class="key rl"></span>429 (<span id="chart-429">{total_429:,}</span>回, 右目盛り)</p>'
    )


def _money(d: DashboardData) -> str:
    def cell(t: Totals, key: str) -> str:
        cost = "未集計" if t.cost_usd is None else f"${t.cost_usd:,.4f}"
        return (
            f'<td id="tokens-{key}">{t.tokens:,}</td><td id="cost-{key}">{e(cost)}</td>'
            f"<td>{t.api_calls:,}</td><td>{t.rate_limited:,}</td><td>{t.embedded:,}</td>"
        )

    return (
        f'<div class="scroll"><table><thead><tr><th></th><th>トークン</th><th>費用 (USD)</th><th>API呼び出し</th>'
        f"<th>429</th><th>埋め込み</th></tr></thead><tbody>"
        f"<tr><th>今日</th>{cell(d.today, 'today')}</tr><tr><th>今月</th>{cell(d.month, 'month')}</tr>"
        f'</tbody></table></div><p class="note">モデル: {e(d.model)}。'
        "費用は実行の統計が費用を知っている分の合計です。</p>"
    )


def _alerts(d: DashboardData) -> str:
    if not d.alerts:
        return '<p class="empty">アラートはありません。</p>'
    rows = []
    for a in d.alerts:
        kind = _ALERT_KINDS.get(a.kind, a.kind)
        state = "🔴 発生中" if a.resolved_at is None else f"✅ 解決 {_when(d, a.resolved_at)}"
        sent = "送信済み" if a.fired_sent_at else "未送信"
        rows.append(
            f'<tr class="{"open" if a.resolved_at is None else "closed"}"><td>{e(state)}</td><td>{e(kind)}</td>'
            f"<td>{e(a.summary)}</td><td>{e(_when(d, a.opened_at))}</td><td>{e(sent)}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="alerts"><thead><tr><th>状態</th><th>種類</th><th>内容</th><th>発生</th>'
        f"<th>通知</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _workers(d: DashboardData) -> str:
    if not d.workers:
        return '<p class="empty">監視ワーカー (--watch) は動いていません。cron などの定期実行だけで処理しています。</p>'
    rows = []
    for w in d.workers:
        if w.stopped_at is not None:
            state = f"停止 {_when(d, w.stopped_at)}" + (
                f" (終了コード {w.exit_code})" if w.exit_code is not None else ""
            )
        elif w.silent_seconds >= d.silence_seconds:
            state = f"⚠️ 報告なし ({age_text(w.silent_seconds)})"
        else:
            state = "🟢 稼働中"
        wake = {"listen": "LISTEN/NOTIFY", "poll": "ポーリング"}.get(w.wake or "", w.wake or "-")
        rows.append(
            f"<tr><td>{e(state)}</td><td>{e(w.worker)}</td><td>{e(wake)}</td><td>{e(_when(d, w.started_at))}</td>"
            f"<td>{e(_when(d, w.heartbeat_at))}</td>"
            f"<td>{e(_OUTCOMES.get(w.last_outcome or '', w.last_outcome or '-'))}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="workers"><thead><tr><th>状態</th><th>ワーカー</th><th>起床</th><th>開始</th>'
        f"<th>最終報告</th><th>最後の結果</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _migration(d: DashboardData) -> str:
    """The model migration while it fills (with what is left to pay), or how the last one ended."""
    p = d.migration
    if p is None:
        return ""
    m, q = p.migration, p.queue
    head = f"{m.source_model or '(記録なし)'} → {m.target_model}"
    if m.state == "cut_over":
        agreement = f" · 一致率 {100 * m.agreement:.1f}%" if m.agreement is not None else ""
        when = _when(d, m.cut_over_at)
        body = f'<p id="migration" data-state="cut_over">{e(head)}: 切り替え済み {e(when)}{e(agreement)}</p>'
    elif m.state == "aborted":
        body = f'<p id="migration" data-state="aborted">{e(head)}: 中止 {e(_when(d, m.ended_at))}</p>'
    else:
        share = q.percent_embedded if q else 0.0
        counts = (
            f"{q.embedded:,}/{q.total:,} · 未処理 {q.pending:,} · 失敗 {q.failed:,} · 処理中 {q.in_progress:,}"
            if q
            else ""
        )
        cost = ""
        if p.cost_usd_batch is not None and p.cost_usd_online is not None:
            cost = f" · 残り推定 Batch API ${p.cost_usd_batch:,.4f} / オンライン ${p.cost_usd_online:,.4f}"
        body = (
            f'<div id="migration" data-state="filling"><p>{e(head)}: 埋め込み中 ({share:.1f}%)</p>'
            f'<div class="progress" role="img" aria-label="{share:.0f}%"><span style="width:{share:.1f}%"></span></div>'
            f'<p class="note">{e(counts)}{e(cost)}</p></div>'
        )
    return _section("🔀 モデル移行", body)


def _batch_jobs(d: DashboardData) -> str:
    if not d.batch_jobs:
        return '<p class="empty">Batch API ジョブはありません (--batch-api で半額の一括処理)。</p>'
    rows = []
    for j in d.batch_jobs:
        if j.state != "done":
            state = j.remote_state or j.state
            result = "-"
        else:
            state = f"完了 ({j.outcome or '-'})"
            result = f"成功 {j.embedded or 0:,} · 失敗 {j.failed or 0:,} · 戻し {j.released or 0:,}"
        target = "移行先" if j.target == "next" else "現行"
        rows.append(
            f"<tr><td>{e(j.name or j.id)}</td><td>{e(j.model)} ({e(target)})</td><td>{e(state)}</td>"
            f"<td>{j.chunks:,}</td><td>{e(age_text((d.now - j.created_at).total_seconds()))}</td>"
            f"<td>{e(result)}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="batch-jobs"><thead><tr><th>ジョブ</th><th>モデル</th><th>状態</th>'
        f"<th>チャンク</th><th>経過</th><th>結果</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _documents(d: DashboardData) -> str:
    if not d.documents:
        return '<p class="empty">文書はまだありません。</p>'
    rows = []
    for doc in d.documents:
        share = 100 * doc.embedded / doc.total if doc.total else 100.0
        rows.append(
            f"<tr><td>{e(doc.name or doc.doc_id)}</td>"
            f'<td><div class="progress" role="img" aria-label="{share:.0f}%">'
            f'<span style="width:{share:.1f}%"></span></div></td>'
            f"<td>{doc.embedded:,}/{doc.total:,}</td><td>{doc.pending:,}</td><td>{doc.failed:,}</td>"
            f"<td>{doc.in_progress:,}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="documents"><thead><tr><th>文書</th><th>進捗</th><th>済/総数</th>'
        f"<th>未処理</th><th>失敗</th><th>処理中</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _errors(d: DashboardData) -> str:
    if not d.errors:
        return '<p class="empty">記録されたエラーはありません。</p>'
    rows = "".join(
        f"<tr><td>{g.chunks:,}</td><td>{e(_when(d, g.last_seen))}</td><td class='err'>{e(g.error)}</td></tr>"
        for g in d.errors
    )
    return (
        '<div class="scroll"><table id="errors"><thead><tr><th>件数</th><th>最終</th><th>エラー</th></tr></thead>'
        f'<tbody>{rows}</tbody></table></div><p class="note">原因を直したら '
        "<code>python batch_embedding_processor.py --retry-only</code></p>"
    )


def _runs(d: DashboardData) -> str:
    if not d.runs:
        return '<p class="empty">実行履歴はまだありません。</p>'
    rows = []
    for r in d.runs:
        cost = "-" if r.cost_usd is None else f"${r.cost_usd:,.4f}"
        code = "-" if r.exit_code is None else str(r.exit_code)
        rows.append(
            f"<tr><td>{e(_when(d, r.ended_at))}</td><td>{e(_KINDS.get(r.kind, r.kind))}</td>"
            f"<td>{e(_SCOPES.get(r.scope, r.scope))}</td><td>{r.embedded:,}</td><td>{r.failed:,}</td>"
            f"<td>{r.api_calls:,}</td><td>{r.rate_limited:,}</td><td>{r.tokens:,}</td><td>{e(cost)}</td>"
            f"<td>{e(_OUTCOMES.get(r.outcome, r.outcome))} ({e(code)})</td></tr>"
        )
    return (
        '<div class="scroll"><table id="runs"><thead><tr><th>終了</th><th>種類</th><th>範囲</th><th>埋め込み</th>'
        "<th>失敗</th><th>API</th><th>429</th><th>トークン</th><th>費用</th><th>結果 (終了コード)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def render_login(*, error: str | None = None) -> str:
    message = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="ja">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ログイン - エンベディング運用ダッシュボード</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
</head>
<body class="login">
<main>
<h1>🧠 エンベディング運用ダッシュボード</h1>
<form method="post" action="/dashboard/login" id="login">
<label for="token">アクセストークン (KNOWLEDGE_API_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
{message}
<button type="submit">ログイン</button>
</form>
<p class="note">トークンはサーバーの設定 KNOWLEDGE_API_TOKEN と同じ値です。
ログインの有効期間が過ぎると、もう一度入力します。</p>
</main>
</body>
</html>
"""
