"""The server: its two listeners, routing, and the embed pipeline (HTTP/1.1 itself is in http11).

Order of checks for an embedding call, as Google's front end and backend do it:
key (403/400) -> model (404) -> JSON body and fields (400) -> poison marker / token limit (400)
-> quota (429) -> injected failures (burst 503, 500, 503, dropped connection, redirect, 400 echoing
the key) -> quota charged -> hang / latency / slow answer -> vectors -> injected corruptions
(malformed JSON, count, length, NaN, zero vector, overflow, underflow) -> delivery (whole or dripped).

The second listener is "another origin" (same host, another port): redirects point there by
default, and it answers only `/redirected/...`, recording what arrived, so a test can see whether a
client followed a redirect to a foreign origin and took its API key along.

Batch and Files API paths go to `batch_api` (their jobs and files live in `self.batches`, which a
background task moves on in time every `BATCH_SWEEP_SECONDS`, besides every call that looks at a job).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import h11
import numpy as np
import numpy.typing as npt

from . import google_errors
from .auth import api_key
from .batch_api import BatchApi
from .batch_service import BatchService
from .config import SimulatorConfig
from .corruptions import corrupt_vectors, truncate_body
from .faults import Fault, FaultInjector, FaultPlan
from .google_errors import ApiError
from .http11 import MAX_HEADER_BYTES, BodyTooLarge, Reply, read_request, send, send_dripping, wait_until_closed
from .models import MODELS, ModelSpec
from .parsing import EmbedItem, batch_size, parse_batch, parse_json, parse_single
from .quota_book import QuotaBook, Refusal
from .quota_errors import bare_429, quota_exceeded
from .redirects import is_redirected, redirect_reply, redirected_request
from .stats import SimulatorStats
from .tokens import count_tokens, truncate_to_tokens
from .vectors import model_embedding, text_sha256
from .wire import batch_body, single_body

logger = logging.getLogger(__name__)

BATCH = "batchEmbedContents"
SINGLE = "embedContent"
MAX_BODY_BYTES = 64 * 1024 * 1024
BATCH_SWEEP_SECONDS = 0.05  # how often batch jobs are moved on when nobody asks about them
_EMBED_PATH = re.compile(
    r"^/(?P<version>v1|v1beta)/models/(?P<model>[^/:]+):(?P<method>batchEmbedContents|embedContent)$"
)
_VECTOR_FAULTS = frozenset(
    {Fault.COUNT_MISMATCH, Fault.WRONG_LENGTH, Fault.NAN, Fault.ZERO_VECTOR, Fault.OVERFLOW, Fault.UNDERFLOW}
)


def _json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8"))


class GeminiSimulator:
    """A local stand-in for the Gemini embedding REST API.

    >>> async with GeminiSimulator(SimulatorConfig(rpm=100)) as sim:
    ...     client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.base_url))

    `config` and `stats` are live: change `sim.config` fields at any time; `stats` counts on.
    `batches` holds the Batch API's jobs (`batches.jobs`) and files (`batches.files`).
    """

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.stats = SimulatorStats()
        self.host = host
        self.port = port
        self._quota = QuotaBook()
        self._faults = FaultInjector(self.config.seed)
        self._server: asyncio.Server | None = None
        self._other: asyncio.Server | None = None
        self._other_port = 0
        self._connections: set[asyncio.Task[Any]] = set()
        self.batches = BatchService(lambda: self.config, self.stats)
        self._batch_api = BatchApi(self.batches, lambda: self.config, self.stats, lambda: self.base_url)
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def _url(self, port: int) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self._url(self.port)

    @property
    def other_origin_url(self) -> str:
        """The second listener: where redirects point unless `redirect_location` says otherwise."""
        return self._url(self._other_port)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        other = functools.partial(self._on_connection, other_origin=True)
        self._other = await asyncio.start_server(other, self.host, 0)
        self._other_port = int(self._other.sockets[0].getsockname()[1])
        self._sweeper = asyncio.create_task(self._sweep_batches())

    async def _sweep_batches(self) -> None:
        """Move batch jobs on in time even when nobody polls them (so the stats stay current)."""
        while True:
            await asyncio.sleep(BATCH_SWEEP_SECONDS)
            try:
                self.batches.advance_all()
            except Exception:  # pragma: no cover - a bug here must not stop the sweeping
                logger.exception("advancing batch jobs failed")

    async def stop(self) -> None:
        server, self._server = self._server, None
        other, self._other = self._other, None
        if server is None:
            return
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        server.close()
        if other is not None:
            other.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        if other is not None:
            await other.wait_closed()

    async def __aenter__(self) -> GeminiSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def reset(self) -> None:
        """Clear the stats (in place) and the quota window, restart the fault sequences, and forget
        every batch job and file."""
        with self.batches.lock:  # no batch job moves on between the stats and the jobs being cleared
            self.stats.clear()
            self._quota.reset()
            self._faults.reseed(self.config.seed)
            self.batches.reset()

    def quota_usage(self, model: str = "gemini-embedding-001") -> tuple[int, int]:
        """(requests, tokens) currently counted by `model`'s per-minute quota."""
        return self._quota.usage(model, self.config)

    def day_usage(self, model: str = "gemini-embedding-001") -> int:
        """Requests currently counted by `model`'s per-day quota."""
        return self._quota.day_usage(model, self.config)

    # ------------------------------------------------------------------ connections
    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, other_origin: bool = False
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                try:
                    received = await read_request(conn, reader, writer, MAX_BODY_BYTES)
                except BodyTooLarge:
                    error = google_errors.too_large(MAX_BODY_BYTES)
                    send(conn, writer, Reply(error.code, error.body(), close=True))
                    await writer.drain()
                    break
                if received is None:
                    break
                reply = self._other_origin(*received) if other_origin else await self._dispatch(*received)
                if not await self._deliver(conn, reader, writer, reply):
                    break
                if reply.close or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                body = google_errors.bad_request(f"Malformed HTTP request: {exc}").body()
                with contextlib.suppress(Exception):
                    send(conn, writer, Reply(400, body, close=True))
                    await writer.drain()
        except (ConnectionError, OSError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            # stop() cancels open connections; end quietly (asyncio's stream callback would log a
            # cancelled handler as an error in Python 3.11)
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    @staticmethod
    async def _deliver(
        conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply
    ) -> bool:
        """Send the reply as it asks to be sent; False when the connection is done with."""
        if reply.drop:
            return False
        if reply.hang:
            await wait_until_closed(reader)
            return False
        if reply.drip_bytes_per_second is not None:
            if not await send_dripping(conn, reader, writer, reply, reply.drip_bytes_per_second):
                return False
        else:
            send(conn, writer, reply)
            await writer.drain()
        if reply.on_delivered is not None:
            reply.on_delivered()
        return True

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, request: h11.Request, body: bytes) -> Reply:
        target = request.target.decode("latin-1")
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path)
        method = request.method.decode("ascii", "replace").upper()
        if path.startswith("/_sim/"):
            return self._admin(method, path, body)
        if is_redirected(path):
            return self._redirected(request, method, raw_path, query)
        match = _EMBED_PATH.match(path)
        if match is None:
            batch_reply = self._batch_api.handle(method, path, query, request.headers, body)
            if batch_reply is not None:
                return batch_reply
            self.stats.record_call("other")
            return self._error(google_errors.path_not_found(raw_path))
        endpoint = match["method"]
        self.stats.record_call(endpoint, match["model"].removeprefix("models/"))
        if method != "POST":
            return self._error(google_errors.method_not_allowed(method))
        key = api_key(request.headers, query)
        return await self._embed(match["version"], match["model"], endpoint, key, body, target)

    def _other_origin(self, request: h11.Request, body: bytes) -> Reply:
        """The second listener answers only what was redirected to it."""
        target = request.target.decode("latin-1")
        raw_path, _, query = target.partition("?")
        method = request.method.decode("ascii", "replace").upper()
        if is_redirected(unquote(raw_path)):
            return self._redirected(request, method, raw_path, query)
        return _json_reply(404, google_errors.path_not_found(raw_path).payload())

    def _redirected(self, request: h11.Request, method: str, raw_path: str, query: str) -> Reply:
        self.stats.record_redirected(*redirected_request(request.headers, method, raw_path, query))
        return _json_reply(404, google_errors.path_not_found(raw_path).payload())

    def _error(self, error: ApiError) -> Reply:
        self.stats.record_status(error.code)
        return Reply(error.code, error.body())

    def _refuse(self, refusal: Refusal, model: ModelSpec) -> Reply:
        """The 429 for a call over quota: Google's body with the configured variants, or a bare one."""
        config = self.config
        self.stats.record_rate_limit([v.kind for v in refusal.violations])
        # drawn first and always, as before the variants existed, to keep each seed's fault sequence
        with_retry = self._faults.chance(config.retry_info_rate) and refusal.retry_info_allowed
        if self._faults.other_chance(config.bare_429_rate):
            self.stats.record_fault("bare_429")
            self.stats.record_status(429)
            bare = bare_429(config.bare_429_body)
            return Reply(429, bare.body, content_type=bare.content_type)
        error = quota_exceeded(
            refusal.violations,
            model.quota_model,
            with_retry,
            with_quota_value=self._faults.other_chance(config.quota_value_rate),
            retry_delay_override=config.retry_delay_override,
        )
        return self._error(error)

    def _admin(self, method: str, path: str, body: bytes) -> Reply:
        if path == "/_sim/stats" and method == "GET":
            return _json_reply(200, self.stats.to_dict())
        if path == "/_sim/config" and method == "GET":
            return _json_reply(200, self.config.to_dict())
        if path == "/_sim/config" and method in ("POST", "PATCH"):
            try:
                patch = json.loads(body or b"{}")
                if not isinstance(patch, dict):
                    raise ValueError("the body must be a JSON object of config fields")
                self.config.update(patch)
            except ValueError as exc:
                return _json_reply(400, ApiError(400, str(exc)).payload())
            return _json_reply(200, self.config.to_dict())
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return _json_reply(200, {"reset": True})
        return _json_reply(404, google_errors.path_not_found(path).payload())

    # ------------------------------------------------------------------ embedding
    def _validate(
        self, version: str, model_name: str, endpoint: str, key: str | None, body: bytes
    ) -> tuple[ModelSpec, list[EmbedItem]]:
        config = self.config
        if key is None:
            raise google_errors.missing_key()
        if config.api_key is not None and key != config.api_key:
            raise google_errors.invalid_key()
        model = MODELS.get(model_name.removeprefix("models/"))
        if model is None:
            raise google_errors.model_not_found(model_name, version, endpoint)
        data = parse_json(body)
        if endpoint == BATCH:
            size = batch_size(data)
            if size is not None:
                self.stats.record_batch_size(size)
            return model, parse_batch(data, model, version)
        self.stats.record_batch_size(1)
        return model, [parse_single(data, model, version)]

    def _limit_texts(self, model: ModelSpec, items: list[EmbedItem]) -> tuple[list[str], int]:
        """The texts to embed (truncated when over the input limit) and the tokens they count."""
        config = self.config
        marker = config.poison_marker
        if marker and any(marker in item.text for item in items):
            raise google_errors.bad_request("Request contains an invalid argument.")
        texts: list[str] = []
        total = 0
        for item in items:
            tokens = count_tokens(item.text)
            text = item.text
            if tokens > model.max_input_tokens:
                if config.over_limit == "reject":
                    raise google_errors.bad_request(
                        f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
                        f"({model.max_input_tokens})."
                    )
                text = truncate_to_tokens(text, model.max_input_tokens)
                tokens = model.max_input_tokens
            texts.append(text)
            total += tokens
        return texts, total

    async def _embed(
        self, version: str, model_name: str, endpoint: str, key: str | None, body: bytes, target: str
    ) -> Reply:
        config = self.config
        try:
            model, items = self._validate(version, model_name, endpoint, key, body)
            texts, tokens = self._limit_texts(model, items)
        except ApiError as error:
            logger.info("%s %s -> %d %s", endpoint, model_name, error.code, error.status)
            return self._error(error)
        requests = 1 if config.count_mode == "call" else len(items)
        refusal = self._quota.check(model.name, requests, tokens, config)
        if refusal is not None:
            logger.info("%s %s -> 429 %s", endpoint, model_name, ",".join(v.kind for v in refusal.violations))
            return self._refuse(refusal, model)

        plan = self._faults.plan(config)
        if plan.failure is not None and plan.failure is not Fault.HANG:
            self.stats.record_fault(plan.failure.value)
            logger.info("%s %d texts -> injected %s", endpoint, len(items), plan.failure.value)
            return self._failure(plan.failure, key, target)

        self._quota.charge(model.name, requests, tokens, config)
        self.stats.record_tokens(tokens)
        if plan.failure is Fault.HANG:  # admitted, then never answered
            self.stats.record_fault(Fault.HANG.value)
            return Reply(hang=True)
        delay = (config.latency_base_ms + config.latency_per_text_ms * len(items)) / 1000.0
        if plan.slow:
            self.stats.record_fault(Fault.SLOW.value)
            delay += config.slow_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        return self._answer(model, endpoint, items, texts, plan)

    def _failure(self, failure: Fault, key: str | None, target: str) -> Reply:
        """The answer given instead of embeddings (nothing is charged to the quota)."""
        if failure is Fault.DROP:
            return Reply(drop=True)
        if failure is Fault.REDIRECT:
            self.stats.record_status(self.config.redirect_status)
            origin = self.config.redirect_location or self.other_origin_url
            return redirect_reply(self.config.redirect_status, origin, target)
        if failure is Fault.ECHO_KEY:
            return self._error(google_errors.key_echoed(key or ""))
        return self._error(google_errors.internal() if failure is Fault.ERROR_500 else google_errors.overloaded())

    def _answer(
        self, model: ModelSpec, endpoint: str, items: list[EmbedItem], texts: list[str], plan: FaultPlan
    ) -> Reply:
        """The 200: the vectors, corrupted and delivered as the plan says."""
        vectors: list[npt.NDArray[np.float32]] = [
            model_embedding(model.name, text, item.dimensions) for text, item in zip(texts, items, strict=True)
        ]
        corruption = plan.corruption
        if corruption in _VECTOR_FAULTS:
            assert corruption is not None
            vectors = corrupt_vectors(corruption, vectors, plan.pick)
        if endpoint == BATCH:
            out = batch_body(vectors)
        elif corruption is Fault.COUNT_MISMATCH:
            out = b"{}"  # embedContent answers one vector: "one too few" is none at all
        else:
            out = single_body(vectors[0])
        if corruption is Fault.MALFORMED:
            out = truncate_body(out, plan.pick)
        self.stats.record_status(200)
        reply = Reply(200, out)
        if corruption is not None:
            self.stats.record_fault(corruption.value)
        else:
            hashes = [text_sha256(item.text) for item in items]
            titles = [item.title for item in items]

            def succeeded() -> None:
                self.stats.record_success(hashes, model.name, titles)

            # counted before the answer leaves (a client that has it sees it counted), except a
            # dripped answer, which counts only if it arrives whole
            if plan.drip:
                reply.on_delivered = succeeded
            else:
                succeeded()
        if plan.drip:
            self.stats.record_fault(Fault.DRIP.value)
            reply.drip_bytes_per_second = self.config.drip_bytes_per_second
        logger.info("%s %d texts -> 200%s", endpoint, len(items), f" ({corruption.value})" if corruption else "")
        return reply


@contextlib.contextmanager
def run_simulator_in_thread(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[GeminiSimulator]:
    """Run a simulator on its own event loop in a daemon thread (for tests that run subprocesses or
    synchronous clients). Yields the running `GeminiSimulator`; stops it on exit."""
    sim = GeminiSimulator(config, host=host, port=port)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failures: list[BaseException] = []
    stop_event: list[asyncio.Event] = []

    async def main() -> None:
        try:
            await sim.start()
        except BaseException as exc:
            failures.append(exc)
            started.set()
            return
        stop_event.append(asyncio.Event())
        started.set()
        try:
            await stop_event[0].wait()
        finally:
            await sim.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="gemini-simulator", daemon=True)
    thread.start()
    started.wait()
    try:
        if failures:
            raise failures[0]
        yield sim
    finally:
        if stop_event:
            loop.call_soon_threadsafe(stop_event[0].set)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
