"""The knowledge upload API: a FastAPI router the host backend mounts, also runnable alone.

    KNOWLEDGE_API_TOKEN=... uvicorn modules.knowledge.api:app      # standalone: bearer token required
    app.include_router(knowledge_router(read=user, upload=user, delete=admin))  # in the host app,
                                                                    # with `lifespan=knowledge_lifespan`

Every route runs behind an authentication dependency: the standalone app's bearer token, or the
host's own (one per action, so deleting can need more than reading). The dependency runs before the
request body is read. An upload is read and chunked in a worker process within the upload limits
(extract.py, isolation.py), then saved by name in one transaction (ingest.py): the same file again is
the document already there, an edited one replaces it keeping its unchanged chunks' vectors. With
AUTO_GENERATE_EMBEDDINGS=true the new chunks are then embedded in the background, through the same
`batch_generate_embeddings_for_document` path the guide describes; what fails stays recorded for
`batch_embedding_processor.py --retry-only`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from modules.cli.logging_setup import configure_logging, logging_configured
from modules.cli.status_view import status_dict
from modules.embedders.base import Embedder
from modules.errors import BatchEmbeddingError, LiveModelChangedError
from modules.knowledge.auth import Dependency, bearer_token
from modules.knowledge.body import read_upload
from modules.knowledge.dashboard import operations_router
from modules.knowledge.errors import DocumentTooLargeError, UnsupportedTypeError
from modules.knowledge.extract import document_type
from modules.knowledge.ingest import AmbiguousNameError, ingest_chunks
from modules.knowledge.service import KnowledgeService
from modules.knowledge.session import SessionAuth
from modules.logs import get_logger
from modules.settings import Settings, SettingsError, load_settings
from modules.stores.base import SaveMode

log = get_logger(__name__)

__all__ = ["KnowledgeService", "create_app", "knowledge_lifespan", "knowledge_router", "operations_router"]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _service(request: Request) -> KnowledgeService:
    service: KnowledgeService | None = getattr(request.app.state, "knowledge", None)
    if service is None:
        raise HTTPException(503, "the knowledge service is not started (use knowledge_lifespan)")
    return service


Service = Annotated[KnowledgeService, Depends(_service)]


def _storable(doc_id: str) -> bool:
    """Whether the database could hold this id at all: PostgreSQL's text refuses NUL (the driver raises
    before the query is sent), so an id with one names no document (404, not a 500)."""
    return "\x00" not in doc_id


def knowledge_router(*, read: Dependency, upload: Dependency, delete: Dependency) -> APIRouter:
    """The /knowledge routes, each behind the host's authentication dependency for its action:
    `read` (list, progress, search), `upload`, and `delete`. A dependency refuses a request by raising
    HTTPException (401 without credentials, 403 without the permission); what it returns is ignored."""
    router = APIRouter(prefix="/knowledge", tags=["knowledge"])

    @router.post(
        "/upload",
        status_code=202,
        dependencies=[Depends(upload)],
        openapi_extra=_UPLOAD_BODY,
        responses={200: {"description": "nothing new to embed (unchanged, or replaced with no new text)"}},
    )
    async def upload_document(
        request: Request,
        response: Response,
        service: Service,
        mode: Annotated[SaveMode, Query(description="replace: by name (default); new: always a new document")] = (
            "replace"
        ),
    ) -> dict[str, Any]:
        settings = service.settings
        name, data = await read_upload(request, settings.upload_max_bytes)
        try:
            document_type(name)
        except UnsupportedTypeError as exc:
            raise HTTPException(415, str(exc)) from None
        report = await service.extractor.run(name, data)
        peak = f"{report.peak_rss_bytes / 1e6:.0f} MB" if report.peak_rss_bytes else "不明"
        if report.document is None:
            error = report.error
            status = 413 if isinstance(error, DocumentTooLargeError) else 422
            log.warning(
                "🚫 アップロードを拒否しました (%d): %s (%.1f秒, ピークメモリ %s)", status, error, report.seconds, peak
            )
            raise HTTPException(status, str(error))
        document = report.document
        log.info(
            "🔍 読み取り完了: %s (%s文字, %dチャンク, %.1f秒, ピークメモリ %s)",
            name,
            f"{document.chars:,}",
            len(document.chunks),
            report.seconds,
            peak,
        )
        try:
            result = await ingest_chunks(service.knowledge, name, document.doc_type, document.chunks, mode)
        except AmbiguousNameError as exc:
            raise HTTPException(409, str(exc)) from None
        auto = settings.auto_generate
        other_model = 0 if result.added == 0 or settings.allow_model_mix else await service.other_model_vectors()
        if result.added == 0:
            response.status_code = 200
            embedding = "nothing new to embed"
        elif other_model:  # the run would refuse to add vectors to a column of another model's
            embedding = f"refused: the new chunks wait, not embedded: {service.other_model_reason(other_model)}"
            log.warning("⚠️ 別モデルのベクトルがあるため、%s の新しいチャンクは埋め込みません", name)
        elif auto:
            service.schedule_embedding(result.doc_id, result.added)
            embedding = "scheduled"
        else:
            embedding = "waiting for batch_embedding_processor.py"
        log.info(
            "📄 アップロード: %s → %s (%dチャンク: 維持 %d / 追加 %d / 削除 %d, 自動エンベディング: %s)",
            name,
            result.outcome,
            result.chunks,
            result.kept,
            result.added,
            result.removed,
            "ON" if auto else "OFF",
        )
        return {
            "doc_id": result.doc_id,
            "name": result.name,
            "outcome": result.outcome,
            "chunks": result.chunks,
            "kept": result.kept,
            "added": result.added,
            "removed": result.removed,
            "embedding": embedding,
        }

    @router.get("/documents", dependencies=[Depends(read)])
    async def documents(service: Service, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
        rows = await service.knowledge.list_documents(limit)
        return [vars(r) for r in rows]

    @router.get("/documents/{doc_id}/progress", dependencies=[Depends(read)])
    async def progress(service: Service, doc_id: str) -> dict[str, Any]:
        if not _storable(doc_id) or not await service.generator.store.document_exists(doc_id):
            raise HTTPException(404, f"document {doc_id!r} was not found")
        return {"doc_id": doc_id, **status_dict(await service.generator.store.status(doc_id))}

    @router.delete("/documents/{doc_id}", dependencies=[Depends(delete)])
    async def delete_document(service: Service, doc_id: str) -> dict[str, Any]:
        removed = await service.knowledge.delete_document(doc_id) if _storable(doc_id) else None
        if removed is None:
            raise HTTPException(404, f"document {doc_id!r} was not found")
        return {"doc_id": doc_id, "deleted_chunks": removed}

    @router.get("/search", dependencies=[Depends(read)])
    async def search(
        service: Service,
        q: Annotated[str, Query(min_length=1, max_length=2000)],
        k: Annotated[int, Query(ge=1, le=50)] = 5,
    ) -> dict[str, Any]:
        other_model = await service.other_model_vectors()
        if other_model:
            raise HTTPException(
                409,
                f"検索できません: ベクトル列に設定のモデル ({service.generator.embedder.model_id}) 以外で作られた"
                f"ベクトルが {other_model:,}件あり、質問のベクトルと比べられません。python fix_missing_embeddings.py "
                "で設定のモデルに揃えて再埋め込みするか、EMBEDDING_MODEL をそのベクトルを作ったモデルにしてください"
                f" / search refused: {service.other_model_reason(other_model)}",
            )
        for attempt in (1, 2):
            embedder = service.generator.embedder
            vector = await _query_vector(embedder, q)
            try:
                hits = await service.knowledge.search(vector, k, model_id=embedder.model_id)
                if any(h.model != embedder.model_id for h in hits):  # never an answer that mixes models
                    raise LiveModelChangedError(f"hits of another model than {embedder.model_id}")
                break
            except LiveModelChangedError:  # a cut-over since the query was embedded: embed it again
                service.recount_models()
                if attempt == 2 or not await service.follow_live_model():
                    raise HTTPException(503, "the vector column changed model during this search; try again") from None
        return {
            "query": q,
            "model": embedder.model_id,
            "results": [
                {
                    "chunk_id": h.chunk_id,
                    "doc_id": h.doc_id,
                    "name": h.name,
                    "chunk_index": h.chunk_index,
                    "similarity": round(h.similarity, 4),
                    "content": h.content,
                    "model": h.model,
                }
                for h in hits
            ],
        }

    return router


async def _query_vector(embedder: Embedder, q: str) -> npt.NDArray[np.float32]:
    """The query's vector, or the HTTP error that says why there is none."""
    try:
        query = await embedder.embed_query(q)
    except BatchEmbeddingError as exc:
        raise HTTPException(502, f"the embedding API could not embed the query: {exc}") from None
    vector = query[0]
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise HTTPException(
            502,
            "the embedding API answered the query with a zero (or non-finite) vector, which has no "
            "direction to rank chunks by; try again, or rephrase the query",
        )
    return np.asarray(vector, dtype=np.float32)


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
    """The standalone app: a face, so it (and only it) sets up logging, as the CLI does. Every route
    but GET /health needs `Authorization: Bearer <KNOWLEDGE_API_TOKEN>`, /docs and /openapi.json too;
    without the setting it refuses to start (SettingsError naming it). Paths are exact: no redirect
    for a trailing slash (nothing the app answers is built from the Host header)."""
    own = settings or load_settings()
    if own.knowledge_api_token is None:
        raise SettingsError(
            "KNOWLEDGE_API_TOKEN",
            "the standalone upload API needs a bearer token; set it to a long random value "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))') and send it as "
            "'Authorization: Bearer <token>'",
        )
    auth = bearer_token(own.knowledge_api_token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not logging_configured():
            configure_logging(own.log_file, own.secrets())
        async with knowledge_lifespan(app, own):
            yield

    # redirect_slashes=False: Starlette would answer "/knowledge/documents/" with a 307 to a Location built
    # from the request's Host header, before authentication; a path with a trailing slash is a 404.
    app = FastAPI(
        title="Batch embedding knowledge API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.include_router(knowledge_router(read=auth, upload=auth, delete=auth))
    # /dashboard (a sign-in form for browsers, a session cookie) and /metrics (the bearer token, or that cookie)
    app.include_router(operations_router(session=SessionAuth(own.knowledge_api_token, own.dashboard_session_hours)))

    @app.get("/health", tags=["health"])
    async def health(request: Request) -> JSONResponse:
        """Unauthenticated: whether the service is up (nothing else is said)."""
        started = getattr(request.app.state, "knowledge", None) is not None
        return JSONResponse({"status": "ok" if started else "starting"}, status_code=200 if started else 503)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(auth)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(auth)])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn modules.knowledge.api:app` builds the app on first access, not at import time. A setting
    # it can't run with is one line naming it (uvicorn would print a traceback).
    if name == "app":
        try:
            return create_app()
        except SettingsError as exc:
            print(f"❌ 設定エラー: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    raise AttributeError(name)
