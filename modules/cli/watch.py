"""`batch_embedding_processor.py --watch`: the watcher as a command (modules/ops/watcher.py does the work).

It stays running and embeds chunks as they arrive. SIGTERM (systemd, docker stop, kill) is its normal
end: the run in flight is cancelled (computed vectors written, other held chunks released), its last
history row written, exit 0. Ctrl-C does the same and exits 130, as every command here does when
interrupted. Errors that waiting can't fix (settings, schema, another model's vectors) exit 2.
"""

from __future__ import annotations

import asyncio
import signal

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.cli.common import EXIT_INTERRUPTED
from modules.embedders import make_embedder
from modules.logs import get_logger
from modules.ops.alerts import alert_monitor
from modules.ops.metrics import MeteredEmbedder, MetricsObserver, process_metrics
from modules.ops.metrics_server import MetricsServer
from modules.ops.wakeup import wakeup_for
from modules.ops.watcher import Watcher
from modules.settings import Settings
from modules.stores.ops_base import operations_store

log = get_logger(__name__)


async def watch(settings: Settings) -> int:
    metrics = process_metrics()
    embedder = MeteredEmbedder(make_embedder(settings), metrics)
    server: MetricsServer | None = None
    try:
        async with BatchEmbeddingGenerator(settings, embedder=embedder) as generator:
            generator.observers.append(MetricsObserver(metrics))
            if settings.metrics_port is not None:

                async def refresh() -> None:
                    await metrics.refresh(generator.store, model_id=embedder.model_id, retry=generator.retry_rule)

                server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port, refresh)
                await server.start()
            monitor = alert_monitor(operations_store(generator.store), settings)
            every = min(60.0, max(1.0, settings.watch_interval))

            async def alerts() -> None:
                await monitor.run_forever(every)

            watcher = Watcher(
                generator,
                settings,
                wakeup_for(generator.store, settings),
                metrics_address=server.address if server else None,
                background=[alerts],
            )
            stop = asyncio.Event()
            interrupted = False

            def on_interrupt() -> None:
                nonlocal interrupted
                interrupted = True
                stop.set()

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
            code = await watcher.serve(stop)
            return EXIT_INTERRUPTED if interrupted else code
    finally:
        if server is not None:
            await server.aclose()
        await embedder.aclose()
