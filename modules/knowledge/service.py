"""What the upload API's routes share: one generator (store + embedder), the worker processes that read
uploads, and the background embedding tasks. Started and stopped by `knowledge_lifespan`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from modules.batch_embedding import BatchEmbeddingGenerator, batch_generate_embeddings_for_document
from modules.errors import BatchEmbeddingError
from modules.knowledge.chunking import ChunkingOptions
from modules.knowledge.extract import UploadLimits
from modules.knowledge.ingest import knowledge_store
from modules.knowledge.isolation import Extractor
from modules.logs import get_logger
from modules.ops.alerts import alert_monitor
from modules.ops.metrics import MeteredEmbedder, MetricsObserver, process_metrics
from modules.settings import Settings
from modules.stores import store_kind
from modules.stores.base import KnowledgeStore
from modules.stores.ops_base import operations_store

log = get_logger(__name__)
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

    async def start(self) -> None:
        await self.generator.open()
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
