"""The knowledge upload API: a FastAPI router the host backend mounts, also runnable alone.

    uvicorn modules.knowledge.api:app          # standalone
    app.include_router(knowledge_router())     # inside the host app (add `lifespan=knowledge_lifespan`)

Upload saves the document and its chunks in one transaction and answers at once. With
AUTO_GENERATE_EMBEDDINGS=true it then embeds the document's chunks in the background, through the
same `batch_generate_embeddings_for_document` path the guide describes; what fails stays recorded for
`batch_embedding_processor.py --retry-only`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile

from modules.batch_embedding import BatchEmbeddingGenerator, batch_generate_embeddings_for_document
from modules.cli.logging_setup import configure_logging, logging_configured
from modules.cli.status_view import status_dict
from modules.errors import BatchEmbeddingError
from modules.knowledge.chunking import ChunkingOptions
from modules.knowledge.extract import document_type, extract_text
from modules.knowledge.ingest import UnreadableDocumentError, ingest_text, knowledge_store
from modules.logs import get_logger
from modules.settings import Settings, load_settings
from modules.stores.base import KnowledgeStore

log = get_logger(__name__)


class KnowledgeService:
    """What the routes share: one generator (store + embedder) and the background embedding tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.generator = BatchEmbeddingGenerator(settings)
        self.background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.generator.open()

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.generator.close()

    @property
    def knowledge(self) -> KnowledgeStore:
        return knowledge_store(self.generator.store)

    def schedule_embedding(self, doc_id: str, chunks: int) -> None:
        task = asyncio.create_task(self._embed_document(doc_id, chunks))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _embed_document(self, doc_id: str, chunks: int) -> None:
        try:
            await batch_generate_embeddings_for_document(doc_id, chunks, generator=self.generator)
        except BatchEmbeddingError as exc:  # recorded in the log; the chunks stay pending or failed
            log.error("❌ アップロード後のエンベディング生成に失敗しました (%s): %s", doc_id, exc)

    async def wait_for_background(self) -> None:
        """For tests and graceful shutdown: wait until scheduled embeddings finish."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)


def _service(request: Request) -> KnowledgeService:
    service: KnowledgeService | None = getattr(request.app.state, "knowledge", None)
    if service is None:
        raise HTTPException(503, "the knowledge service is not started (use knowledge_lifespan)")
    return service


Service = Annotated[KnowledgeService, Depends(_service)]


def knowledge_router() -> APIRouter:
    router = APIRouter(prefix="/knowledge", tags=["knowledge"])

    @router.post("/upload", status_code=202)
    async def upload(service: Service, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        name = file.filename or "upload"
        try:
            document_type(name)
        except UnreadableDocumentError as exc:
            raise HTTPException(415, str(exc)) from None
        limit = service.settings.upload_max_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{name}: larger than the upload limit of {limit:,} bytes (UPLOAD_MAX_BYTES)")
        options = ChunkingOptions(
            target_chars=service.settings.chunk_target_chars,
            overlap_chars=service.settings.chunk_overlap_chars,
            max_tokens=service.settings.max_input_tokens,
        )
        try:
            doc_type, text = extract_text(name, data)
            result = await ingest_text(service.knowledge, name, doc_type, text, options)
        except UnreadableDocumentError as exc:
            raise HTTPException(422, str(exc)) from None
        auto = service.settings.auto_generate
        if auto:
            service.schedule_embedding(result.doc_id, result.chunks)
        log.info(
            "📄 アップロード: %s (%dチャンク, 自動エンベディング: %s)", name, result.chunks, "ON" if auto else "OFF"
        )
        return {
            "doc_id": result.doc_id,
            "name": result.name,
            "chunks": result.chunks,
            "embedding": "scheduled" if auto else "waiting for batch_embedding_processor.py",
        }

    @router.get("/documents")
    async def documents(service: Service, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
        rows = await service.knowledge.list_documents(limit)
        return [vars(r) for r in rows]

    @router.get("/documents/{doc_id}/progress")
    async def progress(service: Service, doc_id: str) -> dict[str, Any]:
        if not await service.generator.store.document_exists(doc_id):
            raise HTTPException(404, f"document {doc_id!r} was not found")
        return {"doc_id": doc_id, **status_dict(await service.generator.store.status(doc_id))}

    @router.delete("/documents/{doc_id}")
    async def delete(service: Service, doc_id: str) -> dict[str, Any]:
        removed = await service.knowledge.delete_document(doc_id)
        if removed is None:
            raise HTTPException(404, f"document {doc_id!r} was not found")
        return {"doc_id": doc_id, "deleted_chunks": removed}

    @router.get("/search")
    async def search(
        service: Service,
        q: Annotated[str, Query(min_length=1, max_length=2000)],
        k: Annotated[int, Query(ge=1, le=50)] = 5,
    ) -> dict[str, Any]:
        try:
            query = await service.generator.embedder.embed_query(q)
        except BatchEmbeddingError as exc:
            raise HTTPException(502, f"the embedding API could not embed the query: {exc}") from None
        hits = await service.knowledge.search(query[0], k)
        return {
            "query": q,
            "results": [
                {
                    "chunk_id": h.chunk_id,
                    "doc_id": h.doc_id,
                    "name": h.name,
                    "chunk_index": h.chunk_index,
                    "similarity": round(h.similarity, 4),
                    "content": h.content,
                }
                for h in hits
            ],
        }

    return router


@asynccontextmanager
async def knowledge_lifespan(app: FastAPI, settings: Settings | None = None) -> AsyncIterator[None]:
    service = KnowledgeService(settings or load_settings())
    await service.start()
    app.state.knowledge = service
    try:
        yield
    finally:
        await service.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The standalone app: a face, so it (and only it) sets up logging, as the CLI does."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = settings or load_settings()
        if not logging_configured():
            configure_logging(own.log_file, own.secrets())
        async with knowledge_lifespan(app, own):
            yield

    app = FastAPI(title="Batch embedding knowledge API", lifespan=lifespan)
    app.include_router(knowledge_router())
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn modules.knowledge.api:app` builds the app on first access, not at import time.
    if name == "app":
        return create_app()
    raise AttributeError(name)
