"""Throughput at the quota: the original system, LangChain, ours at batch 10 and at auto, and the ceiling;
then the quota matrix: ours at auto against every quota shape (benchmarks/quota_matrix.py).

    python -m benchmarks.throughput [--chunks 5000] [--quick] [--count-mode call|text|both]
                                    [--matrix | --no-matrix | --matrix-only] [--cells KEY,...]
                                    [--out benchmarks/results/throughput.json]

One corpus, one embedded PostgreSQL (a fresh database per row), and a fresh Gemini simulator per row
with the same settings for every row of a table: a quota in requests AND tokens per sliding window,
latency that grows with the batch, 3% of calls answered 503. Time is compressed: the quota's window
and every client-side sleep (the original's delays, ours' retry delays) and the simulated latency are
all divided by --speedup, so the full run takes about two minutes per quota mode. Each row runs in
its own process one after another; its peak RSS is that process's own. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.corpus import Chunk, generate
from benchmarks.harness import REPO, RESULTS, PgServer, check_vectors, format_table, run_child, seed, tail, write_json
from benchmarks.quota_matrix import CELLS, Cell, render_matrix, run_matrix

ROWS = ("original", "langchain", "ours-10", "ours-auto", "ours-given")
LANGCHAIN_VENV_PYTHON = REPO / "benchmarks" / ".venv-langchain" / "bin" / "python"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--chunks", type=int, default=None, help="corpus size (default 5000; 200 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests (200 chunks, faster clock)")
    parser.add_argument("--count-mode", choices=("call", "text", "both"), default="both")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    parser.add_argument("--seed", type=int, default=0, help="corpus and fault seed")
    quota = parser.add_argument_group("the quota and the API, in real (uncompressed) terms")
    quota.add_argument("--rpm", type=int, default=1500, help="requests per minute (calls, or texts in text mode)")
    quota.add_argument("--tpm", type=int, default=1_000_000, help="input tokens per minute")
    quota.add_argument("--latency-ms", type=float, default=150.0, help="latency of every call")
    quota.add_argument("--latency-per-text-ms", type=float, default=10.0, help="extra latency per text in a call")
    quota.add_argument("--error-rate-503", type=float, default=0.03)
    quota.add_argument("--retry-info-rate", type=float, default=1.0, help="share of 429s that carry RetryInfo")
    clock = parser.add_argument_group("time compression")
    clock.add_argument("--speedup", type=float, default=None, help="divide every duration by this (default 8)")
    clock.add_argument(
        "--windows-per-minute",
        type=int,
        default=4,
        help="split the minute's quota into this many sliding windows (finer than Google's, so a run spans "
        "many windows; the average rate is unchanged)",
    )
    rows = parser.add_argument_group("rows")
    rows.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    rows.add_argument(
        "--original-chunks", type=int, default=None, help="the original runs on the first N chunks (default 200)"
    )
    rows.add_argument("--langchain-python", help="interpreter with langchain-google-genai (default: see README)")
    rows.add_argument(
        "--row-timeout", type=float, default=150.0, help="seconds before a row is stopped (its rate is still reported)"
    )
    matrix = parser.add_argument_group("the quota matrix (ours at auto, one cell per quota shape)")
    which = matrix.add_mutually_exclusive_group()
    which.add_argument("--no-matrix", action="store_true", help="only the tables of rows")
    which.add_argument("--matrix-only", action="store_true", help="only the matrix")
    matrix.add_argument("--cells", default=None, help=f"comma-separated subset of {', '.join(c.key for c in CELLS)}")
    return parser


def find_langchain_python(explicit: str | None) -> str | None:
    """The interpreter for LangChain's row: --langchain-python, $BENCH_LANGCHAIN_PYTHON, this one if it has
    langchain-google-genai, else benchmarks/.venv-langchain (kept apart: it pins google-genai<3)."""
    candidates = [explicit, os.environ.get("BENCH_LANGCHAIN_PYTHON"), sys.executable, str(LANGCHAIN_VENV_PYTHON)]
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import langchain_google_genai, psycopg, pgvector, numpy"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


def langchain_version(python: str) -> str:
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m; print(m.version('langchain-google-genai'), m.version('google-genai'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    parts = probe.stdout.split()
    return f"langchain-google-genai {parts[0]} on google-genai {parts[1]}" if len(parts) == 2 else "unknown"


def git_commit() -> str | None:
    probe = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "modules"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return None
    return probe.stdout.strip() + ("+modules-dirty" if dirty.stdout.strip() else "")


def ceiling(corpus_tokens: int, chunks: int, mode: str, limits: dict[str, float], window: float) -> dict[str, Any]:
    """What the quota allows for this corpus: every metric's total (the corpus' tokens as the simulator
    counts them; requests at 100 texts per call, or one per text in text mode) over its per-window limit
    gives the windows needed, k, for the binding one; the ceiling is chunks / (k windows). A sliding
    window also lets one window's quota go at once at the start, so a perfect client could finish in
    (k - 1) windows: reported as `best_with_initial_burst` (the last call's latency aside)."""
    calls = math.ceil(chunks / 100)
    requests = calls if mode == "call" else chunks
    needs = {"tokens": corpus_tokens / limits["tpm"], "requests": requests / limits["rpm"]}
    binding = max(needs, key=lambda k: needs[k])
    windows = needs[binding]
    burst = max(windows - 1.0, 0.0) * window
    return {
        "binding": binding,
        "windows_needed": {k: round(v, 3) for k, v in needs.items()},
        "seconds": round(windows * window, 3),
        "chunks_per_second": round(chunks / (windows * window), 2) if windows > 0 else None,
        "best_with_initial_burst_seconds": round(burst, 3),
        "best_with_initial_burst_chunks_per_second": round(chunks / burst, 2) if burst > 0 else None,
        "api_calls": calls,
        "tokens": corpus_tokens,
        "requests_counted": requests,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the embedded PostgreSQL
    chunks_n = args.chunks or (200 if args.quick else 5000)
    speedup = args.speedup or (32.0 if args.quick else 8.0)
    original_n = min(chunks_n, args.original_chunks or (20 if args.quick else 200))
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))}; choose from {', '.join(ROWS)}")
    modes = [] if args.matrix_only else ["call", "text"] if args.count_mode == "both" else [args.count_mode]
    cells = [] if args.no_matrix else [c for c in CELLS if args.cells is None or c.key in args.cells.split(",")]
    scale = 1.0 / speedup
    window = 60.0 / speedup / args.windows_per_minute
    limits = {"rpm": args.rpm / args.windows_per_minute, "tpm": args.tpm / args.windows_per_minute}

    from modules.gemini_simulator import SimulatorConfig, count_tokens, run_simulator_in_thread
    from modules.text import estimate_tokens

    corpus: list[Chunk] = list(generate(chunks_n, args.seed))
    tokens = sum(count_tokens(c.content) for c in corpus)
    corpus_info = {
        "chunks": chunks_n,
        "seed": args.seed,
        "documents": len({c.doc_id for c in corpus}),
        "characters": sum(len(c.content) for c in corpus),
        "min_chars": min(len(c.content) for c in corpus),
        "max_chars": max(len(c.content) for c in corpus),
        "tokens_as_simulator_counts": tokens,
        "tokens_as_product_estimates": sum(estimate_tokens(c.content) for c in corpus),
    }
    langchain_python = find_langchain_python(args.langchain_python) if "langchain" in wanted else None
    run_dir = args.out.parent / (args.out.stem + "_logs")
    report: dict[str, Any] = {
        "benchmark": "throughput",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git_commit(),
        "quick": args.quick,
        "corpus": corpus_info,
        "time_scale": {
            "speedup": speedup,
            "window_seconds": window,
            "real_window_seconds": 60.0 / args.windows_per_minute,
            "note": "the quota window, the simulated latency and every client-side sleep are divided by speedup",
        },
        "quota_real": {"rpm": args.rpm, "tpm": args.tpm, "windows_per_minute": args.windows_per_minute},
        "quota_per_window": limits,
        "langchain": langchain_version(langchain_python) if langchain_python else None,
        "modes": {},
    }
    print(
        f"corpus: {chunks_n} chunks in {corpus_info['documents']} documents, {corpus_info['characters']:,} characters, "
        f"{tokens:,} tokens as the simulator counts; quota per {window:g}-s window: {limits['rpm']:g} requests, "
        f"{limits['tpm']:,.0f} tokens (= {args.rpm} RPM / {args.tpm:,} TPM, {speedup:g}× faster clock)",
        flush=True,
    )
    with PgServer() as pg:
        for mode in modes:
            sim_config = {
                "rpm": int(limits["rpm"]),
                "tpm": int(limits["tpm"]),
                "window_seconds": window,
                "count_mode": mode,
                "latency_base_ms": args.latency_ms * scale,
                "latency_per_text_ms": args.latency_per_text_ms * scale,
                "error_rate_503": args.error_rate_503,
                "retry_info_rate": args.retry_info_rate,
                "seed": args.seed,
            }
            top = ceiling(tokens, chunks_n, mode, limits, window)
            results: list[dict[str, Any]] = []
            for row in wanted:
                print(f"[{mode}] {row} ...", end=" ", flush=True)
                result = run_row(
                    row,
                    pg=pg,
                    corpus=corpus[:original_n] if row == "original" else corpus,
                    sim_config=SimulatorConfig(**sim_config),
                    scale=scale,
                    run_dir=run_dir / mode,
                    langchain_python=langchain_python,
                    timeout=args.row_timeout,
                    run_simulator_in_thread=run_simulator_in_thread,
                )
                results.append(result)
                print(
                    f"{result['status']}: {result.get('chunks_per_second') or 0:.1f} chunks/s, "
                    f"lost {result.get('lost', '—')}",
                    flush=True,
                )
            finish(results, top)
            section = {"simulator": sim_config, "ceiling": top, "rows": results, "targets": targets(results)}
            report["modes"][mode] = section
            print()
            print(render(mode, section, report))
            print()
        if cells:
            base = {
                "window_seconds": window,
                "latency_base_ms": args.latency_ms * scale,
                "latency_per_text_ms": args.latency_per_text_ms * scale,
                "error_rate_503": args.error_rate_503,
                "seed": args.seed,
            }

            def run_cell(cell: Cell, chunks: list[Chunk], config: dict[str, Any], where: Path) -> dict[str, Any]:
                return run_row(
                    "ours-auto",
                    pg=pg,
                    corpus=chunks,
                    sim_config=SimulatorConfig(**config),
                    scale=scale,
                    run_dir=where / cell.key,
                    langchain_python=None,
                    timeout=args.row_timeout,
                    run_simulator_in_thread=run_simulator_in_thread,
                )

            full = list(generate(max(chunks_n, max(c.chunks for c in cells)), args.seed))
            section = run_matrix(
                cells=cells,
                corpus=full if not args.quick else full[:chunks_n],
                window=window,
                base_config=base,
                run_dir=run_dir / "matrix",
                run_cell=run_cell,
                count_tokens=count_tokens,
            )
            report["matrix"] = section
            print()
            print(render_matrix(section, window, 60.0 / args.windows_per_minute))
            print()
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(args.out, report)
    print(f"JSON: {args.out}")
    return 0


def run_row(
    row: str,
    *,
    pg: PgServer,
    corpus: list[Chunk],
    sim_config: Any,
    scale: float,
    run_dir: Path,
    langchain_python: str | None,
    timeout: float,
    run_simulator_in_thread: Any,
) -> dict[str, Any]:
    base: dict[str, Any] = {"row": row, "chunks": len(corpus)}
    if row == "langchain" and langchain_python is None:
        return base | {
            "status": "skipped",
            "reason": "langchain-google-genai not found: create benchmarks/.venv-langchain (see README)",
        }
    kind, _, batch = row.partition("-")
    with pg.fresh_database(kind) as url:
        seed(url, corpus)
        with run_simulator_in_thread(sim_config) as sim:
            argv = ["-m", "benchmarks.rows", kind, "--db", url, "--sim", sim.base_url, "--time-scale", f"{scale:g}"]
            out = run_dir / f"{row}.json"
            if kind == "ours":
                product_log = run_dir / f"{row}.product.log"
                product_log.unlink(missing_ok=True)  # the product appends to its log file
                argv += ["--batch-size", "auto" if batch == "given" else batch, "--log-file", str(product_log)]
                # The product takes Google's per-minute windows by default; here "a minute" is the simulator's
                # compressed window, as every other duration is compressed.
                argv += ["--env", f"EMBEDDING_QUOTA_WINDOW={sim_config.window_seconds:g}"]
                if batch == "given":  # the quota told up front, as a user who knows it would set it
                    argv += ["--env", f"EMBEDDING_RPM={sim_config.rpm}", "--env", f"EMBEDDING_TPM={sim_config.tpm}"]
            child = run_child(
                [*argv, "--out", str(out)],
                log=run_dir / f"{row}.log",
                result_file=out,
                python=langchain_python if kind == "langchain" else None,
                timeout=timeout,
            )
            server = sim.stats.snapshot()
        check = check_vectors(url)
    child_result = child.result
    elapsed = 0.0 if child.timed_out else float(child_result.get("elapsed_seconds") or 0.0)
    embedded_ok = check.embedded - check.wrong
    repeats = sum(n - 1 for n in server.embeds_per_text.values() if n > 1)
    if child.timed_out:  # stopped at --row-timeout: the rate is what it managed in its process's lifetime
        elapsed = elapsed or child.wall_seconds
        status = "timeout"
    else:
        status = "ok" if child.returncode == 0 else f"exit {child.returncode}"
    result = base | {
        "status": status,
        "chunks_per_second": round(embedded_ok / elapsed, 2) if elapsed > 0 else None,
        "elapsed_seconds": round(elapsed, 3),
        "api_calls": server.total_calls,
        "rate_limited": server.rate_limited,
        "rate_limited_share": round(server.rate_limited / server.total_calls, 4) if server.total_calls else 0.0,
        "server_errors": server.server_errors,
        "successful_calls": server.successful_calls,
        "texts_embedded_by_server": server.texts_embedded,
        "texts_embedded_more_than_once": repeats,
        "max_batch_seen": server.max_batch_seen,
        "tokens_charged": server.tokens_counted,
        "lost": check.missing + check.wrong,
        "db": check.as_dict(),
        "peak_rss_mb": round(child.peak_rss_mb, 1),
        "process_wall_seconds": round(child.wall_seconds, 3),
        "process_cpu_seconds": round(child.cpu_seconds, 3),
        "client": {k: v for k, v in child_result.items() if k not in ("row",)},
        "log": str(child.log.relative_to(REPO)) if child.log.is_relative_to(REPO) else str(child.log),
    }
    if child.timed_out or child.returncode == 3:  # stopped early: what it had not reached is unfinished, not lost
        result["unfinished"] = check.missing - check.failed_recorded
        result["lost"] = check.failed_recorded + check.wrong
    if child.returncode != 0 or child.timed_out:
        result["error_tail"] = tail(child.log, 8)
    return result


def finish(results: list[dict[str, Any]], top: dict[str, Any]) -> None:
    original = next((r for r in results if r["row"] == "original" and r.get("chunks_per_second")), None)
    for r in results:
        rate = r.get("chunks_per_second")
        r["share_of_ceiling"] = round(rate / top["chunks_per_second"], 4) if rate and top["chunks_per_second"] else None
        r["vs_original"] = round(rate / original["chunks_per_second"], 2) if rate and original else None


def targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    auto = next((r for r in results if r["row"] == "ours-auto" and r["status"] in ("ok", "timeout")), None)
    if auto is None:
        return {"evaluated": False}
    unfinished = auto.get("unfinished", 0)
    checks = {
        "finished": (f"{unfinished} chunks not reached" if unfinished else "yes", not unfinished),
        "share_of_ceiling>=0.90": (auto["share_of_ceiling"], (auto["share_of_ceiling"] or 0) >= 0.90),
        "rate_limited_share<=0.02": (auto["rate_limited_share"], auto["rate_limited_share"] <= 0.02),
        "lost==0": (
            auto["lost"] + auto["client"].get("failed", 0),
            auto["lost"] == 0 and not auto["client"].get("failed"),
        ),
        "vs_original>=10": (auto["vs_original"], (auto["vs_original"] or 0) >= 10.0),
    }
    return {"evaluated": True, **{k: {"value": v, "met": ok} for k, (v, ok) in checks.items()}}


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


LABELS = {
    "original": "original (guide: 1 call/chunk)",
    "langchain": "LangChain embed_documents",
    "ours-10": "ours, EMBEDDING_BATCH_SIZE=10",
    "ours-auto": "ours, EMBEDDING_BATCH_SIZE=auto",
    "ours-given": "ours, auto, EMBEDDING_RPM/TPM given",
}


def render(mode: str, section: dict[str, Any], report: dict[str, Any]) -> str:
    top = section["ceiling"]
    headers = [
        "row",
        "chunks",
        "chunks/s",
        "share of ceiling",
        "× original",
        "API calls",
        "429s",
        "lost/failed",
        "peak RSS",
    ]
    lines = []
    for r in section["rows"]:
        if r["status"] == "skipped":
            lines.append([LABELS[r["row"]] + " (skipped)", r["chunks"], "—", "—", "—", "—", "—", "—", "—"])
            continue
        label = LABELS[r["row"]] + ("" if r["status"] == "ok" else f" ({r['status']})")
        lines.append(
            [
                label,
                f"{r['chunks']:,}",
                _fmt(r["chunks_per_second"], "{:.1f}"),
                _fmt(r["share_of_ceiling"] and r["share_of_ceiling"] * 100, "{:.1f}%"),
                _fmt(r["vs_original"], "{:.1f}×"),
                f"{r['api_calls']:,}",
                f"{r['rate_limited']:,} ({r['rate_limited_share'] * 100:.1f}%)",
                f"{r['lost']:,}" + (f" (+{r['unfinished']:,} unfinished)" if r.get("unfinished") else ""),
                f"{r['peak_rss_mb']:.0f} MB",
            ]
        )
    original = next((r for r in section["rows"] if r["row"] == "original" and r.get("chunks_per_second")), None)
    vs = top["chunks_per_second"] / original["chunks_per_second"] if original and top["chunks_per_second"] else None
    lines.append(
        [
            f"ceiling ({top['binding']} bind)",
            f"{report['corpus']['chunks']:,}",
            _fmt(top["chunks_per_second"], "{:.1f}"),
            "100.0%",
            _fmt(vs, "{:.1f}×"),
            f"{top['api_calls']:,}",
            "0 (0.0%)",
            "0",
            "—",
        ]
    )
    sim = section["simulator"]
    scale = report["time_scale"]
    notes = [
        f"count_mode={mode}: quota {sim['rpm']} {'calls' if mode == 'call' else 'texts'} and {sim['tpm']:,} tokens per "
        f"{sim['window_seconds']:g}-s sliding window; latency {sim['latency_base_ms']:g} ms + "
        f"{sim['latency_per_text_ms']:g} ms/text; {sim['error_rate_503'] * 100:g}% of calls 503.",
        f"Time runs {scale['speedup']:g}× fast: the window stands for {scale['real_window_seconds']:g} s, and the "
        f"original's sleeps (0.5 s/chunk, 1 s/batch, 2 s retry), ours' retry delays and the latency are divided by "
        f"{scale['speedup']:g} too.",
        f"Ceiling: the corpus needs {top['windows_needed']['tokens']:.2f} windows of tokens and "
        f"{top['windows_needed']['requests']:.2f} of requests (at 100 texts/call): {top['seconds']:g} s. (A sliding "
        f"window lets one window's quota go at once, so a perfect client could finish in one window less, "
        f"{top['best_with_initial_burst_seconds']:g} s = {top['best_with_initial_burst_chunks_per_second'] or 0:.1f} "
        "chunks/s.)",
        "chunks/s counts correct vectors in the database over the row's own working time; API calls and 429s are "
        "the simulator's count; lost/failed = chunks with no (or a wrong) vector at the end; peak RSS of the row's "
        "own process.",
    ]
    original_row = next((r for r in section["rows"] if r["row"] == "original"), None)
    if original_row and original_row["chunks"] != report["corpus"]["chunks"]:
        notes.append(
            f"The original ran on the first {original_row['chunks']} chunks (its rate does not depend on size)."
        )
    if report.get("langchain"):
        notes.append(
            f"LangChain: {report['langchain']}, embed_documents per 100 texts; it retries and paces nothing, so a "
            "429 or 503 loses that call's 100 chunks."
        )
    out = [f"### count_mode = {mode}", "", format_table(headers, lines), ""]
    out += [f"{n + 1}. {note}" for n, note in enumerate(notes)]
    verdict = section["targets"]
    if verdict.get("evaluated"):
        out.append("")
        out.append(
            "Targets for ours at auto: "
            + "; ".join(
                f"{k} {'met' if v['met'] else 'MISSED'} ({v['value']})" for k, v in verdict.items() if k != "evaluated"
            )
        )
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
