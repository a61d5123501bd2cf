"""What the upload API's routes share: one generator (store + embedder), the worker processes that read
uploads, the background embedding tasks, and what the vector column holds. Started and stopped by
`knowledge_lifespan`.

A query can only be ranked against vectors of the model that embedded it. How many vectors of another
model the column holds (EMBEDDING_MODEL and its dimension make the model id) is counted at start, then
again when the count is older than MODEL_CHECK_SECONDS, and at once after a background run refused to
mix models: not on every search, since it counts the whole table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from modules.batch_embedding import BatchEmbeddingGenerator, batch_generate_embeddings_for_document
from modules.embedders import make_embedder
from modules.errors import BatchEmbeddingError, ModelMismatchError
from modules.knowledge.chunking import ChunkingOptions
from modules.knowledge.extract import UploadLimits
from modules.knowledge.ingest import knowledge_store
from modules.knowledge.isolation import Extractor
from modules.knowledge.sealing import seal_process
from modules.logs import get_logger
from modules.model_ids import settings_for_model_id
from modules.ops.alerts import alert_monitor
from modules.ops.metrics import MeteredEmbedder, MetricsObserver, process_metrics
from modules.settings import Settings
from modules.stores import store_kind
from modules.stores.base import KnowledgeStore
from modules.stores.ops_base import operations_store

log = get_logger(__name__)
MODEL_CHECK_SECONDS = 30.0
ALERT_EVALUATION_SECONDS = 30.0


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_docx_bytes=settings.upload_max_docx_bytes,
        max_pdf_pages=settings.upload_max_pdf_pages,
        max_chars=settings.upload_max_chars,
        max_chunks=settings.upload_max_chunks,
    )


def chunking_options(settings: Settings) -> ChunkingOptions:
    return ChunkingOptions(
        target_chars=settings.chunk_target_chars,
        overlap_chars=settings.chunk_overlap_chars,
        max_tokens=settings.max_input_tokens,
    )


class KnowledgeService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = process_metrics()
        self.generator = BatchEmbeddingGenerator(settings)
        self.generator.embedder_wrapper = lambda inner: MeteredEmbedder(inner, self.metrics)
        self.generator.observers.append(MetricsObserver(self.metrics))
        self._alerts: asyncio.Task[None] | None = None
        self.extractor = Extractor(
            workers=settings.upload_extract_workers,
            timeout=settings.upload_extract_timeout,
            limits=upload_limits(settings),
            options=chunking_options(settings),
        )
        self.background: set[asyncio.Task[None]] = set()
        self.model_check_seconds = MODEL_CHECK_SECONDS
        self._other_model: tuple[int, float] | None = None  # (vectors of another model, when counted)
        self._model_lock = asyncio.Lock()

    async def start(self) -> None:
        # The workers that read uploads run as this process's user: close its environment (the app's
        # secrets), memory and working directory to them (sealing.py).
        seal_process()
        await self.generator.open()
        other = await self.other_model_vectors()
        if other:
            log.warning(
                "⚠️ ベクトル列に設定のモデル (%s) 以外で作られたベクトルが %s件あります。揃えるまで検索は 409 を返し、"
                "新しいチャンクの埋め込みも行いません: python fix_missing_embeddings.py (EMBEDDING_MODEL を確認)",
                self.generator.embedder.model_id,
                f"{other:,}",
            )
        # The alert rules are evaluated here too (every process that evaluates agrees: the incidents' state is
        # in the database), so alerts go out even where no watcher runs.
        monitor = alert_monitor(operations_store(self.generator.store), self.settings)
        self._alerts = asyncio.create_task(self._evaluate_alerts(monitor.run_forever))

    async def _evaluate_alerts(self, loop: Callable[[float], Awaitable[None]]) -> None:
        await asyncio.sleep(ALERT_EVALUATION_SECONDS)
        await loop(ALERT_EVALUATION_SECONDS)

    async def stop(self) -> None:
        if self._alerts is not None:
            self._alerts.cancel()
            await asyncio.gather(self._alerts, return_exceptions=True)
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.generator.close()
        if store_kind(self.settings) == "embedded":
            # An ASGI server stopped by SIGTERM re-raises the signal after shutdown, and the default
            # handler ends the process without running atexit, where the embedded server would stop.
            from modules.stores.embedded import release_embedded_postgres

            await release_embedded_postgres(self.settings.embedded_pg_dir)

    @property
    def knowledge(self) -> KnowledgeStore:
        return knowledge_store(self.generator.store)

    async def other_model_vectors(self) -> int:
        """Vectors in the column made by another model than the configured one (or by an unrecorded
        one); 0 when a query can be ranked against the column. Counted at most every
        `model_check_seconds` (see the module docstring)."""
        if (known := self._fresh_other_model()) is not None:
            return known
        count = await self._count_other_model()
        if count and await self.follow_live_model():  # a cut-over, not a mix: count for the new model
            count = await self._count_other_model()
        return count

    async def _count_other_model(self) -> int:
        async with self._model_lock:
            if (known := self._fresh_other_model()) is not None:
                return known  # counted while this request waited for the lock
            generator = self.generator
            status = await generator.store.status(model_id=generator.embedder.model_id)
            self._other_model = (status.other_model, time.monotonic())
            return status.other_model

    async def follow_live_model(self) -> bool:
        """Embed queries (and uploads) with the model a cut-over put in the vector column, if it is not
        the generator's yet; True when it changed."""
        async with self._model_lock:
            generator = self.generator
            live = await generator.store.live_model()
            current = generator.embedder.model_id
            if live is None or live == current:
                return False
            settings = settings_for_model_id(generator.settings, live)
            generator.adopt_model(settings, make_embedder(settings))
            self._other_model = None
            log.warning("🔀 ベクトル列が %s に切り替わりました: 検索の質問も %s で埋め込みます", live, live)
            return True

    def recount_models(self) -> None:
        """Count the column's models again at the next request (a search met a vector of another one)."""
        self._other_model = None

    def _fresh_other_model(self) -> int | None:
        if self._other_model is None:
            return None
        count, counted_at = self._other_model
        return count if time.monotonic() - counted_at < self.model_check_seconds else None

    def other_model_reason(self, count: int) -> str:
        """Why a query can't be ranked against the column, and the fix (English)."""
        t = self.settings.tables
        return (
            f"{t.chunks}.{t.embedding_column} holds {count:,} vectors made by another model than "
            f"{self.generator.embedder.model_id} (EMBEDDING_MODEL / EMBEDDING_DIMENSIONS), and a query can't be "
            "ranked against vectors of another model. Re-embed them with the configured model: python "
            "fix_missing_embeddings.py (add --dry-run to see what it would do); or set EMBEDDING_MODEL to the "
            "model that made them"
        )

    def schedule_embedding(self, doc_id: str, chunks: int) -> None:
        task = asyncio.create_task(self._embed_document(doc_id, chunks))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _embed_document(self, doc_id: str, chunks: int) -> None:
        try:
            await batch_generate_embeddings_for_document(doc_id, chunks, generator=self.generator)
        except ModelMismatchError as exc:  # another model's vectors arrived since the last count
            self._other_model = None  # so the next search counts again, and is refused
            log.error("❌ アップロード後のエンベディング生成に失敗しました (%s): %s", doc_id, exc)
        except BatchEmbeddingError as exc:  # recorded in the log; the chunks stay pending or failed
            log.error("❌ アップロード後のエンベディング生成に失敗しました (%s): %s", doc_id, exc)

    async def wait_for_background(self) -> None:
        """For tests and graceful shutdown: wait until scheduled embeddings finish."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
