"""The quota matrix: ours at EMBEDDING_BATCH_SIZE=auto against each quota shape the simulator serves.

Google documents per-minute quotas in requests and tokens, and per day; it does not document whether
a batch counts as one request or one per text, nor whether windows slide, are fixed, or refill like a
token bucket, and its 429s name the quota's limit (quotaValue) and the wait (RetryInfo) while proxies,
Vertex and some regions send less. Each cell is one such server (a fresh simulator and database):

- shape: sliding window, fixed windows, token bucket;
- what binds: requests counted per text, input tokens, or requests counted per call (the other
  quota, when there is one, has room to spare);
- what a 429 says: quotaValue and RetryInfo, either missing, both, or a bare 429 (Vertex's JSON);
- a small per-text quota (200 texts a window), and a per-day quota that runs out.

Columns: share of the cell's ceiling (what its quota allows at up to 100 texts a call), share of calls
answered 429, API calls against the fewest the quota allows (every call the simulator answered,
429s and 503s included), and chunks lost or failed. Targets, every cell: >= 90% of the ceiling;
<= 3% of calls answered 429 when the 429 names the limit, <= 10% when it does not; calls <= 1.15 x
the minimum; nothing lost. The per-day cell must end with exit 3 and nothing charged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.corpus import Chunk
from benchmarks.harness import format_table

BASE_REQUESTS = 375  # per window: the old table's 1,500 RPM in four windows a minute
BASE_TOKENS = 250_000  # per window: 1,000,000 TPM in four windows a minute


@dataclass(frozen=True)
class Cell:
    key: str
    label: str
    shape: str = "sliding"
    count_mode: str = "text"
    rpm: int | None = BASE_REQUESTS
    tpm: int | None = BASE_TOKENS
    rpd: int | None = None
    quota_value_rate: float = 1.0
    retry_info_rate: float = 1.0
    bare_429_rate: float = 0.0
    chunks: int = 5000

    @property
    def names_limit(self) -> bool:
        return self.quota_value_rate >= 1.0 and self.bare_429_rate == 0.0


def per_text(key: str, label: str, shape: str = "sliding", **variant: Any) -> Cell:
    return Cell(key, label, shape, "text", BASE_REQUESTS, BASE_TOKENS, **variant)


def tokens_bind(key: str, label: str, shape: str = "sliding", **variant: Any) -> Cell:
    return Cell(key, label, shape, "call", BASE_REQUESTS, BASE_TOKENS, **variant)


def per_call(key: str, label: str, shape: str = "sliding") -> Cell:
    return Cell(key, label, shape, "call", 5, None)


CELLS: tuple[Cell, ...] = (
    per_text("sliding-texts", "sliding · requests per text"),
    per_text("fixed-texts", "fixed · requests per text", "fixed"),
    per_text("bucket-texts", "token bucket · requests per text", "token_bucket"),
    tokens_bind("sliding-tokens", "sliding · tokens"),
    tokens_bind("fixed-tokens", "fixed · tokens", "fixed"),
    tokens_bind("bucket-tokens", "token bucket · tokens", "token_bucket"),
    per_call("sliding-calls", "sliding · requests per call"),
    per_call("fixed-calls", "fixed · requests per call", "fixed"),
    per_call("bucket-calls", "token bucket · requests per call", "token_bucket"),
    per_text("no-value", "sliding · per text · no quotaValue", quota_value_rate=0.0),
    per_text("no-retry", "sliding · per text · no RetryInfo", retry_info_rate=0.0),
    per_text("no-value-no-retry", "sliding · per text · neither", quota_value_rate=0.0, retry_info_rate=0.0),
    per_text("bare", "sliding · per text · bare 429 (Vertex)", bare_429_rate=1.0),
    tokens_bind("fixed-tokens-neither", "fixed · tokens · neither", "fixed", quota_value_rate=0.0, retry_info_rate=0.0),
    per_text("bucket-texts-bare", "token bucket · per text · bare 429", "token_bucket", bare_429_rate=1.0),
    Cell("small-texts", "sliding · 200 texts per window", rpm=200, tpm=None, chunks=4000),
    Cell("per-day", "per day: 20 requests, then exit 3", count_mode="call", rpm=None, tpm=None, rpd=20),
)


def cell_ceiling(cell: Cell, chunks: list[Chunk], window: float, count_tokens: Callable[[str], int]) -> dict[str, Any]:
    """What the cell's quota allows: the windows each bound metric needs at up to 100 texts a call (or
    as many as one call may hold), the ceiling rate over the binding one, and the fewest calls."""
    n = len(chunks)
    tokens = sum(count_tokens(c.content) for c in chunks)
    per_call = 100
    if cell.count_mode == "text" and cell.rpm is not None:
        per_call = min(per_call, cell.rpm)
    if cell.tpm is not None:
        per_call = min(per_call, max(1, int(cell.tpm / (tokens / n))))
    calls = math.ceil(n / per_call)
    needs: dict[str, float] = {}
    if cell.rpm is not None:
        needs["requests"] = (calls if cell.count_mode == "call" else n) / cell.rpm
    if cell.tpm is not None:
        needs["tokens"] = tokens / cell.tpm
    binding = max(needs, key=lambda k: needs[k]) if needs else None
    windows = needs[binding] if binding else None
    return {
        "binding": binding,
        "windows_needed": {k: round(v, 3) for k, v in needs.items()},
        "seconds": round(windows * window, 3) if windows else None,
        "chunks_per_second": round(n / (windows * window), 2) if windows else None,
        "min_api_calls": calls,
        "tokens": tokens,
    }


def run_matrix(
    *,
    cells: list[Cell],
    corpus: list[Chunk],
    window: float,
    base_config: dict[str, Any],
    run_dir: Path,
    run_cell: Callable[[Cell, list[Chunk], dict[str, Any], Path], dict[str, Any]],
    count_tokens: Callable[[str], int],
) -> dict[str, Any]:
    """Run every cell (ours at auto), one after another; returns the matrix section of the report."""
    rows: list[dict[str, Any]] = []
    for cell in cells:
        chunks = corpus[: cell.chunks]
        config = base_config | {
            "rpm": cell.rpm,
            "tpm": cell.tpm,
            "rpd": cell.rpd,
            "day_seconds": 3600.0,
            "count_mode": cell.count_mode,
            "quota_shape": cell.shape,
            "quota_value_rate": cell.quota_value_rate,
            "retry_info_rate": cell.retry_info_rate,
            "bare_429_rate": cell.bare_429_rate,
        }
        print(f"[matrix] {cell.label} ...", end=" ", flush=True)
        result = run_cell(cell, chunks, config, run_dir)
        top = cell_ceiling(cell, chunks, window, count_tokens)
        row = evaluate(cell, result, top) | {"cell": asdict(cell), "simulator": config, "ceiling": top}
        rows.append(row)
        print(_summary(row), flush=True)
    return {"cells": rows, "all_met": all(r["met"] for r in rows)}


def evaluate(cell: Cell, result: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    calls = result.get("api_calls") or 0
    rate = result.get("chunks_per_second")
    share = round(rate / top["chunks_per_second"], 4) if rate and top["chunks_per_second"] else None
    calls_ratio = round(calls / top["min_api_calls"], 3) if top["min_api_calls"] else None
    lost = (result.get("lost") or 0) + (result.get("client", {}).get("failed") or 0)
    row = result | {"label": cell.label, "share_of_ceiling": share, "calls_vs_minimum": calls_ratio, "lost": lost}
    if cell.rpd is not None:  # the per-day quota runs out: exit 3, everything given back, nothing charged
        db = result.get("db", {})
        message = str(result.get("client", {}).get("api_unavailable", ""))
        checks = {
            "exit 3": result.get("status") == "exit 3",
            "per-day message": "per-day quota" in message,
            "nothing charged": db.get("failed_recorded") == 0 and db.get("leased") == 0 and db.get("wrong") == 0,
        }
    else:
        allowed_429 = 0.03 if cell.names_limit else 0.10
        checks = {
            "finished": result.get("status") == "ok",
            "share>=0.90": (share or 0) >= 0.90,
            f"429s<={allowed_429:.0%}": result.get("rate_limited_share", 1.0) <= allowed_429,
            "calls<=1.15x": (calls_ratio or 99) <= 1.15,
            "lost==0": lost == 0,
        }
    return row | {"checks": checks, "met": all(checks.values())}


def _summary(row: dict[str, Any]) -> str:
    share = row["share_of_ceiling"]
    return (
        f"{row['status']}: {share * 100 if share else 0:.1f}% of ceiling, {row.get('rate_limited', 0)} 429s, "
        f"{row.get('api_calls', 0)} calls ({row['calls_vs_minimum']}x), lost {row['lost']}"
        + ("" if row["met"] else f"  MISSED {[k for k, ok in row['checks'].items() if not ok]}")
    )


def render_matrix(section: dict[str, Any], window: float, real_window: float) -> str:
    headers = ["quota (shape · what binds · what a 429 says)", "share of ceiling", "429s", "calls vs minimum", "lost"]
    lines = []
    for r in section["cells"]:
        share = r["share_of_ceiling"]
        label = r["label"] + ("" if r["met"] else " ✗")
        if r["cell"]["rpd"] is not None:
            embedded = r.get("db", {}).get("embedded", 0)
            status = f"{r['status']}, {embedded:,} embedded"
            lines.append([label, status, "—", f"{r.get('api_calls', 0)}", f"{r['lost']}"])
            continue
        lines.append(
            [
                label,
                "—" if share is None else f"{share * 100:.1f}%",
                f"{r.get('rate_limited', 0)} ({r.get('rate_limited_share', 0) * 100:.1f}%)",
                f"{r.get('api_calls', 0)} / {r['ceiling']['min_api_calls']} = {r['calls_vs_minimum']:.2f}×",
                f"{r['lost']:,}",
            ]
        )
    notes = [
        f"Each cell: ours at EMBEDDING_BATCH_SIZE=auto, EMBEDDING_QUOTA_WINDOW={window:g} (the simulator's window, "
        f"standing for {real_window:g} s), nothing else told; a fresh simulator and database; 5,000 chunks unless "
        f"said. Base quota per window: {BASE_REQUESTS} requests and {BASE_TOKENS:,} tokens (per call: 5 requests, "
        "no token quota); the per-day cell: 20 requests a day.",
        "share of ceiling: correct vectors per second over what the cell's quota allows at up to 100 texts a call; "
        "429s: share of the calls the simulator answered; calls vs minimum: every call the simulator answered "
        "(429s and 503s included) over the fewest the quota allows; lost: chunks without their vector, or failed.",
        "Targets: share >= 90%; 429s <= 3% when the 429 names the limit, <= 10% when it does not; calls <= 1.15×; "
        "lost 0; the per-day cell ends with exit 3 and nothing charged. ✗ marks a missed target.",
    ]
    out = ["### Quota matrix (ours, auto)", "", format_table(headers, lines), ""]
    out += [f"{n + 1}. {note}" for n, note in enumerate(notes)]
    out += ["", "All targets met." if section["all_met"] else "Some targets MISSED (✗)."]
    return "\n".join(out)
