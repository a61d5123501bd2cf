"""Hostile uploads against the real upload API, in one run: the three figures of issue 13.

1. A 5,000-page PDF uploaded (UPLOAD_MAX_PDF_PAGES raised to let it in) while searches run next to it:
   how long the upload took, and how long each concurrent search took (and a search on an idle app).
2. Zip bombs: a .docx that inflates to 1 GB with honest zip headers, the same with headers that declare
   4 KB, and a ~700 KB .docx of 150 MB of text (the issue's case), plus one of 60 MB that passes the
   decompression limit: the answer, its time, the worker process's peak memory and the app's own.
3. A function planted as `public.vector_dims` (and an operator `public.<=>`) by a role that may create
   objects in public, on a database laid out as Supabase's (pgvector in `extensions`, its API roles,
   the committed migrations applied in order), then the queue called as service_role over the PostgREST
   stand-in: whether the planted code ran.

    python -m benchmarks.upload_hostile [--pages 5000] [--out benchmarks/results/upload_hostile.json]

The app is the standalone one (create_app) over httpx's ASGI transport, on a throwaway embedded PostgreSQL,
with the local (WordLlama) provider; every upload is read in its own worker process, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import psycopg
from psycopg import sql

from benchmarks.harness import PgServer, format_table, migrate, write_json
from modules.cli.logging_setup import configure_logging
from modules.knowledge.api import create_app, knowledge_lifespan
from modules.knowledge.isolation import WorkerReport
from modules.settings import Secret, TableNames, load_settings
from modules.stores.supabase import SupabaseStore
from tests.hostile_files import many_page_pdf, zip_bomb_docx
from tests.postgrest_fake import SERVICE_KEY, PostgrestFake, apply_migration, ensure_supabase_roles, supabase_defaults

TOKEN = "benchmark-token-3c9e1a7f5b2d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = "経費精算の締め日はいつですか"
SEED = "経費精算の締め日は毎月25日です。領収書は原本を提出してください。出張旅費は別に定めます。"


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def peak_mb(report: WorkerReport | None) -> float | None:
    return round(report.peak_rss_bytes / 1e6, 1) if report and report.peak_rss_bytes else None


async def timed_search(client: httpx.AsyncClient) -> float:
    started = time.monotonic()
    response = await client.get("/knowledge/search", params={"q": QUERY, "k": 3})
    response.raise_for_status()
    return time.monotonic() - started


async def upload_app(url: str, pages: int) -> dict[str, Any]:
    settings = load_settings(
        env={
            "DATABASE_URL": url,
            "EMBEDDING_PROVIDER": "local",
            "KNOWLEDGE_API_TOKEN": TOKEN,
            "UPLOAD_MAX_PDF_PAGES": str(pages),
            "AUTO_GENERATE_EMBEDDINGS": "true",
        }
    )
    app = create_app(settings)
    result: dict[str, Any] = {}
    async with knowledge_lifespan(app, settings):
        service = app.state.knowledge
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=AUTH, timeout=600) as client:
            (await client.post("/knowledge/upload", files={"file": ("faq.txt", SEED.encode())})).raise_for_status()
            await service.wait_for_background()
            idle = [await timed_search(client) for _ in range(20)]

            pdf = many_page_pdf(pages)
            started = time.monotonic()
            task = asyncio.create_task(client.post("/knowledge/upload", files={"file": ("manual.pdf", pdf)}))
            during: list[float] = []
            last, longest_gap = started, 0.0  # client and app share one loop: a stalled loop shows as a gap
            while not task.done():
                during.append(await timed_search(client))
                longest_gap = max(longest_gap, time.monotonic() - last)
                last = time.monotonic()
                await asyncio.sleep(0.05)
            response = await task
            seconds = time.monotonic() - started
            longest_gap = max(longest_gap, time.monotonic() - last)
            report = service.extractor.last_report
            result["pdf"] = {
                "pages": pages,
                "bytes": len(pdf),
                "status": response.status_code,
                "chunks": response.json().get("chunks"),
                "upload_seconds": round(seconds, 2),
                "worker_seconds": round(report.seconds, 2) if report else None,
                "worker_peak_rss_mb": peak_mb(report),
                "searches_during": len(during),
                "search_ms_during_median": round(statistics.median(during) * 1000, 1),
                "search_ms_during_max": round(max(during) * 1000, 1),
                "longest_ms_without_an_answer": round(longest_gap * 1000, 1),
                "search_ms_idle_median": round(statistics.median(idle) * 1000, 1),
                "search_ms_idle_max": round(max(idle) * 1000, 1),
            }
            await service.wait_for_background()

            bombs = [
                ("bomb-1GB-honest.docx", zip_bomb_docx(1_000_000_000), "inflates to 1 GB; headers say so"),
                ("bomb-1GB-lying.docx", zip_bomb_docx(1_000_000_000, lie=4096), "inflates to 1 GB; headers say 4 KB"),
                ("text-150MB.docx", zip_bomb_docx(150_000_000), "150 MB of paragraphs (the issue's 697 KB file)"),
                ("text-60MB.docx", zip_bomb_docx(60_000_000), "60 MB of paragraphs, under UPLOAD_MAX_DOCX_BYTES"),
            ]
            result["bombs"] = []
            for name, data, what in bombs:
                before = rss_mb()
                started = time.monotonic()
                response = await client.post("/knowledge/upload", files={"file": (name, data)})
                seconds = time.monotonic() - started
                report = service.extractor.last_report
                result["bombs"].append(
                    {
                        "file": name,
                        "what": what,
                        "bytes": len(data),
                        "status": response.status_code,
                        "answer": response.json().get("detail", response.json()),
                        "seconds": round(seconds, 2),
                        "worker_peak_rss_mb": peak_mb(report),
                        "app_rss_mb_before": round(before, 1),
                        "app_rss_mb_after": round(rss_mb(), 1),
                    }
                )
    return result


async def planted_function(server: PgServer) -> dict[str, Any]:
    ensure_supabase_roles(server.admin_uri)
    with server.fresh_database("planted") as url:
        name = url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA extensions")
            conn.execute("CREATE EXTENSION vector WITH SCHEMA extensions")
            conn.execute(
                sql.SQL('ALTER DATABASE {} SET search_path = "$user", public, extensions').format(sql.Identifier(name))
            )
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'intruder'").fetchone():
                conn.execute("CREATE ROLE intruder NOLOGIN")
            conn.execute("GRANT USAGE, CREATE ON SCHEMA public TO intruder")
            conn.execute("GRANT USAGE ON SCHEMA extensions TO intruder, service_role")
        supabase_defaults(url)
        apply_migration(url)
        vector = np.zeros(768, dtype=np.float32)
        vector[0] = 1.0
        literal = "[" + ",".join(map(str, vector)) + "]"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO document_sources (id, name, type) VALUES ('doc', '規程.md', 'md')")
            conn.execute(
                "INSERT INTO chunks (id, doc_id, chunk_index, content, embedding, embedding_model) "
                "VALUES ('c1', 'doc', 0, '締め日は毎月25日です。', %s::extensions.vector, 'other@768')",
                (literal,),
            )
            conn.execute("CREATE TABLE public.planted_calls (who text, what text)")
            conn.execute("GRANT INSERT ON public.planted_calls TO PUBLIC")
            conn.execute("SET ROLE intruder")
            conn.execute(
                """CREATE FUNCTION public.vector_dims(extensions.vector) RETURNS integer LANGUAGE plpgsql AS $$
                   BEGIN INSERT INTO public.planted_calls VALUES (current_user, 'vector_dims'); RETURN 768; END $$"""
            )
            conn.execute(
                """CREATE FUNCTION public.planted_distance(extensions.vector, extensions.vector)
                   RETURNS double precision LANGUAGE plpgsql AS $$
                   BEGIN INSERT INTO public.planted_calls VALUES (current_user, '<=>'); RETURN 0; END $$"""
            )
            conn.execute(
                "CREATE OPERATOR public.<=> (LEFTARG = extensions.vector, RIGHTARG = extensions.vector, "
                "FUNCTION = public.planted_distance)"
            )
            search_path = conn.execute(
                "SELECT DISTINCT array_to_string(proconfig, ',') FROM pg_proc WHERE proname ~ '^embq_'"
            ).fetchall()
        with PostgrestFake(url) as fake:
            store = SupabaseStore(fake.url, Secret(SERVICE_KEY), TableNames(), 768, timeout=10.0)
            try:
                await store.prepare()
                errors: list[str] = []
                try:
                    report = await store.repair_report("gemini-embedding-001@768", 768)
                    hits = await store.search(vector, 3)
                except Exception as exc:  # a planted function that raises would surface here
                    errors.append(f"{type(exc).__name__}: {exc}")
                    report, hits = [], []
            finally:
                await store.aclose()
        with psycopg.connect(url, autocommit=True) as conn:
            calls = conn.execute("SELECT who, what FROM public.planted_calls").fetchall()
            conn.execute("DROP OWNED BY intruder")
    return {
        "function_search_path": [row[0] for row in search_path],
        "planted_calls": [f"{who}: {what}" for who, what in calls],
        "outcome": "did not run" if not calls else f"RAN {len(calls)} time(s)",
        "repair_report_rows": len(report),
        "search_hits": [(h.chunk_id, round(h.distance, 4)) for h in hits],
        "errors": errors,
    }


async def main_async(pages: int) -> dict[str, Any]:
    machine = f"{platform.machine()}, {psutil.cpu_count()} CPUs"
    result: dict[str, Any] = {"machine": machine, "python": platform.python_version()}
    with PgServer() as server:
        with server.fresh_database("upload") as url:
            await asyncio.to_thread(migrate, url)
            result.update(await upload_app(url, pages))
        result["planted"] = await planted_function(server)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/upload_hostile.json"))
    args = parser.parse_args()
    configure_logging(None, [TOKEN], level=logging.WARNING)
    result = asyncio.run(main_async(args.pages))
    pdf = result["pdf"]
    print(f"\n## {pdf['pages']:,}-page PDF ({pdf['bytes'] / 1e6:.1f} MB) uploaded while searching\n")
    print(
        format_table(
            ["", "value"],
            [
                ["upload answer", f"{pdf['status']} ({pdf['chunks']} chunks)"],
                ["upload time (worker)", f"{pdf['upload_seconds']} s ({pdf['worker_seconds']} s)"],
                ["worker peak memory", f"{pdf['worker_peak_rss_mb']} MB"],
                ["searches during the upload", pdf["searches_during"]],
                ["search during: median / max", f"{pdf['search_ms_during_median']} / {pdf['search_ms_during_max']} ms"],
                ["longest stretch without an answer", f"{pdf['longest_ms_without_an_answer']} ms"],
                ["search idle: median / max", f"{pdf['search_ms_idle_median']} / {pdf['search_ms_idle_max']} ms"],
            ],
        )
    )
    print("\n## Zip bombs and heavy .docx\n")
    print(
        format_table(
            ["file", "size", "what", "answer", "time", "worker peak", "app RSS before → after"],
            [
                [
                    b["file"],
                    f"{b['bytes'] / 1e6:.2f} MB",
                    b["what"],
                    f"{b['status']}: {str(b['answer'])[:90]}",
                    f"{b['seconds']} s",
                    f"{b['worker_peak_rss_mb']} MB",
                    f"{b['app_rss_mb_before']} → {b['app_rss_mb_after']} MB",
                ]
                for b in result["bombs"]
            ],
        )
    )
    planted = result["planted"]
    print("\n## Planted public.vector_dims and public.<=>, queue called as service_role\n")
    print(f"functions' search_path: {', '.join(planted['function_search_path'])}")
    print(f"planted code: {planted['outcome']} {planted['planted_calls'] or ''}")
    print(f"repair report rows: {planted['repair_report_rows']}; search hits: {planted['search_hits']}")
    if planted["errors"]:
        print(f"errors: {planted['errors']}")
    write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
