"""One row of the throughput table, run in its own process by `benchmarks.throughput`.

    python -m benchmarks.rows original  --db URL --sim URL --out FILE [--time-scale C] [--limit N]
    python -m benchmarks.rows langchain --db URL --sim URL --out FILE
    python -m benchmarks.rows ours      --db URL --sim URL --out FILE [--batch-size 10|auto] [--time-scale C]

Every row reads the pending chunks from the same freshly seeded database, embeds them through the
simulator and writes the vectors back; it reports what it counted itself in a JSON file (the API
calls and 429s in the table come from the simulator, not from here). Module-level imports are the
standard library only: the LangChain row runs under its own interpreter (see README.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

API_KEY = "bench-key-0123456789"
MODEL = "gemini-embedding-001"
DIMENSIONS = 768
PACER_EVENTS: list[dict[str, Any]] = []  # ours: what the pacer learned from each 429 (kept if interrupted)
PENDING = "SELECT id, content FROM chunks WHERE embedding IS NULL ORDER BY doc_id, chunk_index"


# --- the original system, re-created from BATCH_EMBEDDING_GUIDE (one call per chunk) -------------------


def run_original(args: argparse.Namespace) -> dict[str, Any]:
    """The guide's generator: batches of 10 processed one chunk at a time, one embed call and one UPDATE
    per chunk, 0.5 s between chunks, 1 s between batches, 3 retries 2 s apart, then a recovery pass
    over the failed chunks in batches of 5. Every sleep is multiplied by --time-scale (the quota
    window's compression), so the comparison with a compressed quota stays fair."""
    import numpy as np
    import psycopg
    from google import genai
    from google.genai import types
    from pgvector.psycopg import register_vector

    scale = args.time_scale
    batch_size, max_retries, retry_delay, chunk_delay, batch_delay = 10, 3, 2.0, 0.5, 1.0
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=args.sim, timeout=60_000))
    config = types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", output_dimensionality=DIMENSIONS)
    calls = errors = 0

    with psycopg.connect(args.db, autocommit=True) as conn:
        register_vector(conn)
        started = time.monotonic()
        sql = PENDING + (f" LIMIT {int(args.limit)}" if args.limit else "")
        rows: list[tuple[str, str]] = conn.execute(sql).fetchall()

        def embed_one(chunk_id: str, content: str) -> bool:
            nonlocal calls, errors
            for attempt in range(max_retries + 1):
                try:
                    calls += 1
                    response = client.models.embed_content(model=MODEL, contents=content, config=config)
                    values = (response.embeddings or [])[0].values or []
                    conn.execute(
                        "UPDATE chunks SET embedding = %s WHERE id = %s", (np.asarray(values, np.float32), chunk_id)
                    )
                    return True
                except Exception:  # the guide's loop retries whatever went wrong
                    errors += 1
                    if attempt < max_retries:
                        time.sleep(retry_delay * scale)
            return False

        def process(batch_rows: list[tuple[str, str]], size: int) -> list[tuple[str, str]]:
            failed: list[tuple[str, str]] = []
            for start in range(0, len(batch_rows), size):
                for chunk_id, content in batch_rows[start : start + size]:
                    if not embed_one(chunk_id, content):
                        failed.append((chunk_id, content))
                    time.sleep(chunk_delay * scale)
                time.sleep(batch_delay * scale)
            return failed

        failed = process(rows, batch_size)
        recovered = len(failed)
        failed = process(failed, 5)  # エラー回復処理: 失敗チャンクを5件ずつ再処理
        recovered -= len(failed)
        elapsed = time.monotonic() - started
    return {
        "selected": len(rows),
        "embedded": len(rows) - len(failed),
        "failed": len(failed),
        "recovered_in_second_pass": recovered,
        "elapsed_seconds": elapsed,
        "client_calls": calls,
        "client_errors": errors,
    }


# --- LangChain's GoogleGenerativeAIEmbeddings ---------------------------------------------------------


def run_langchain(args: argparse.Namespace) -> dict[str, Any]:
    """`embed_documents` on slices of 100 texts (LangChain's own batch size, so one API call each),
    each slice's vectors written with one batched UPDATE. LangChain retries nothing (google-genai's
    default is no retry) and does no pacing: a slice whose call fails is counted failed and the run
    goes on with the next slice, which is kinder than one embed_documents over the whole corpus
    (there, the first error loses everything)."""
    import numpy as np
    import psycopg
    from langchain_google_genai import GoogleGenerativeAIEmbeddings
    from pgvector.psycopg import register_vector

    embeddings = GoogleGenerativeAIEmbeddings(
        model=MODEL,
        api_key=API_KEY,
        base_url=args.sim,
        task_type="RETRIEVAL_DOCUMENT",
        output_dimensionality=DIMENSIONS,
    )
    slice_size = args.slice
    embedded = failed = calls = 0
    error_kinds: dict[str, int] = {}
    with psycopg.connect(args.db, autocommit=True) as conn:
        register_vector(conn)
        started = time.monotonic()
        rows: list[tuple[str, str]] = conn.execute(PENDING).fetchall()
        for start in range(0, len(rows), slice_size):
            part = rows[start : start + slice_size]
            calls += 1
            try:
                vectors = embeddings.embed_documents([content for _, content in part])
            except Exception as exc:  # GoogleGenerativeAIError wraps the API error
                failed += len(part)
                kind = _error_kind(exc)
                error_kinds[kind] = error_kinds.get(kind, 0) + 1
                continue
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE chunks c SET embedding = v.vec FROM unnest(%s::text[], %s::vector[]) AS v(id, vec) "
                    "WHERE c.id = v.id",
                    ([chunk_id for chunk_id, _ in part], [np.asarray(v, np.float32) for v in vectors]),
                )
                embedded += cur.rowcount
        elapsed = time.monotonic() - started
    return {
        "selected": len(rows),
        "embedded": embedded,
        "failed": failed,
        "elapsed_seconds": elapsed,
        "client_calls": calls,
        "failed_calls_by_error": error_kinds,
    }


def _error_kind(exc: BaseException) -> str:
    text = str(exc)
    for code in ("429", "503", "500", "400"):
        if f"({code}" in text or f" {code} " in text or text.startswith(code):
            return code
    return type(exc).__name__


# --- ours: BatchEmbeddingGenerator ------------------------------------------------------------------


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    """The product as a user runs it: settings from the environment (only the provider, key, base URL,
    database and batch size are set; EMBEDDING_RPM/TPM are left unset, so the pacer learns the quota
    from 429s), the retry delays scaled by --time-scale like the original's sleeps."""
    import asyncio

    from modules.batch_embedding import BatchEmbeddingGenerator
    from modules.cli.logging_setup import configure_logging
    from modules.errors import ApiUnavailableError
    from modules.settings import load_settings

    env = {
        "DATABASE_URL": args.db,
        "EMBEDDING_PROVIDER": "gemini",
        "GOOGLE_API_KEY": API_KEY,
        "GOOGLE_GEMINI_BASE_URL": args.sim,
        "EMBEDDING_MODEL": MODEL,
        "EMBEDDING_DIMENSIONS": str(DIMENSIONS),
        "EMBEDDING_BATCH_SIZE": args.batch_size,
        "EMBEDDING_RETRY_DELAY": f"{2.0 * args.time_scale:g}",
        "EMBEDDING_MAX_RETRY_DELAY": f"{60.0 * args.time_scale:g}",
        "EMBEDDING_LOG_FILE": args.log_file or str(Path(args.out).with_suffix(".log")),
    }
    for pair in args.env or []:
        name, _, value = pair.partition("=")
        env[name] = value
    settings = load_settings(env=env)
    configure_logging(settings.log_file, settings.secrets())
    pacer_events = _watch_pacer(PACER_EVENTS)

    async def main() -> dict[str, Any]:
        async with BatchEmbeddingGenerator(settings) as generator:
            try:
                stats = await generator.run()
            except ApiUnavailableError as exc:  # the CLI's exit 3: what was done, and why it stopped
                stats = generator.stats
                stopped = {"api_unavailable": str(exc), "retry_hint": exc.retry_hint}
            else:
                stopped = {}
        data = stats.as_dict()
        return stopped | {
            "selected": stats.total,
            "embedded": stats.embedded,
            "failed": stats.failed,
            "elapsed_seconds": stats.elapsed,
            "client_calls": stats.api_calls,
            "run_stats": data,
            "pacer_429s": pacer_events,
            "settings": {k: v for k, v in env.items() if k not in ("GOOGLE_API_KEY", "DATABASE_URL")},
        }

    return asyncio.run(main())


def _watch_pacer(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Diagnostics only: record what the pacer learns from each 429 (the quota it names, its limit, the
    wait it asked for, what the pacer concluded), by wrapping `Pacer.rate_limited`. Does nothing if the
    product's pacer changes shape."""
    try:
        from modules.engine import pacing
    except ImportError:
        return events
    original = getattr(pacing.Pacer, "rate_limited", None)
    if original is None:
        return events
    started = time.monotonic()

    def watched(self: Any, ticket: Any, hit: Any, *rest: Any, **kwargs: Any) -> Any:
        result = original(self, ticket, hit, *rest, **kwargs)
        stats = getattr(self, "stats", None)
        limiter = getattr(self, "limiter", None)
        events.append(
            {
                "at_seconds": round(time.monotonic() - started, 3),
                "sent_at_seconds": round(getattr(ticket, "sent_at", started) - started, 3),
                "retry_after": getattr(hit, "retry_after", None),
                "quota": getattr(hit, "kind", None),
                "limit": getattr(hit, "limit", None),
                "learned": getattr(stats, "learned", None),
                "retry_hint": round(float(getattr(self, "retry_hint", 0.0)), 3),
                "stretch": getattr(self, "stretch", None),
                "in_flight": getattr(limiter, "in_use", None),
                "concurrency": getattr(limiter, "limit", None),
                "batch_size": getattr(self, "batch_size", None),
            }
        )
        return result

    pacing.Pacer.rate_limited = watched  # type: ignore[method-assign]
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", choices=("original", "langchain", "ours"))
    parser.add_argument("--db", required=True, help="database URL (a fresh, seeded database)")
    parser.add_argument("--sim", required=True, help="base URL of the Gemini simulator")
    parser.add_argument("--out", required=True, help="where to write this row's JSON")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiplier for every client-side sleep")
    parser.add_argument("--limit", type=int, default=0, help="original: only the first N chunks (0 = all)")
    parser.add_argument("--slice", type=int, default=100, help="langchain: texts per embed_documents call")
    parser.add_argument("--batch-size", default="10", help="ours: EMBEDDING_BATCH_SIZE (a number or auto)")
    parser.add_argument("--log-file", help="ours: EMBEDDING_LOG_FILE")
    parser.add_argument("--env", action="append", metavar="NAME=VALUE", help="ours: an extra setting")
    args = parser.parse_args(argv)
    runner = {"original": run_original, "langchain": run_langchain, "ours": run_ours}[args.row]
    try:
        result = runner(args)
    except KeyboardInterrupt:  # stopped at the harness's --row-timeout: keep the diagnostics
        result = {"interrupted": True, "pacer_429s": PACER_EVENTS}
    result["row"] = args.row
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return 3 if "api_unavailable" in result else 0  # the CLI's exit code for "the API could not be used"


if __name__ == "__main__":
    raise SystemExit(main())
