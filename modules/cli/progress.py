"""Live progress: a redrawn bar on a terminal, plain periodic lines anywhere else (CI, cron, pipes).

It only reads the run's RunStats; it keeps no counters of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import TextIO

from modules.engine.stats import RunStats
from modules.logs import get_logger

log = get_logger(__name__)


def _eta(stats: RunStats) -> str:
    rate = stats.processed / stats.elapsed if stats.elapsed > 0 else 0.0
    left = max(0, stats.total - stats.processed)
    if rate <= 0 or left == 0:
        return "--:--"
    seconds = int(left / rate)
    return (
        f"{seconds // 60:02d}:{seconds % 60:02d}"
        if seconds < 3600
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    )


def render_bar(stats: RunStats, width: int = 30) -> str:
    total = max(stats.total, stats.processed, 1)
    filled = int(width * stats.processed / total)
    rate = stats.processed / stats.elapsed if stats.elapsed > 0 else 0.0
    return (
        f"[{'█' * filled}{'·' * (width - filled)}] {stats.processed}/{total} "
        f"| {rate:.1f} チャンク/秒 | 残り {_eta(stats)} | 失敗 {stats.failed}"
    )


class _ClearBarBeforeLogLines(logging.Filter):
    """A log line printed over the bar would share its line: wipe the bar first (it is redrawn)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        self.stream.write("\r\x1b[2K")
        return True


@contextlib.asynccontextmanager
async def show_progress(
    stats_source: object, *, stream: TextIO | None = None, interval: float | None = None
) -> AsyncIterator[None]:
    """Show progress of `stats_source.stats` (read afresh each tick) while the body runs."""
    out = stream or sys.stderr
    live = out.isatty()
    tick = interval if interval is not None else (0.2 if live else 10.0)

    async def draw() -> None:
        while True:
            await asyncio.sleep(tick)
            stats: RunStats = getattr(stats_source, "stats")  # noqa: B009 - read afresh each tick
            if live:
                out.write("\r\x1b[2K" + render_bar(stats))
                out.flush()
            elif stats.total:
                log.info("⏳ 進捗: %s", render_bar(stats, width=20))

    clear_line = _ClearBarBeforeLogLines(out)
    console = [h for h in log.handlers if isinstance(h, logging.StreamHandler) and h.stream is out] if live else []
    for handler in console:
        handler.addFilter(clear_line)
    task = asyncio.create_task(draw())
    try:
        yield
    finally:
        for handler in console:
            handler.removeFilter(clear_line)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if live:
            out.write("\r\x1b[2K")
            out.flush()
