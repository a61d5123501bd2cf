"""Embedder on Google's Gemini API through the official `google-genai` SDK (async).

One `batchEmbedContents` call per batch, whatever the model and whatever documents the batch spans:
- every text goes as its own `Content` (one text part). A plain list of strings would do for
  gemini-embedding-001, but for gemini-embedding-2 the SDK folds a list of strings into ONE Content of
  many parts (`t_is_multimodal_embedding_model` -> `t_contents`), which the API answers with one
  fused vector; a list of Contents stays one request, and one vector, per text for every model;
- each text is put to the model as the model table says (`modules.embedding_models`): for
  gemini-embedding-001 the task type and the document's title as API fields, for gemini-embedding-2
  written into the text (`title: ... | text: ...`, `task: search result | query: ...`);
- the SDK takes one title per call (`EmbedContentConfig.title`), so per-item titles go through
  `HttpOptions(extra_body={"requests": [...]})`, which the SDK merges into the body it built; lists
  are replaced, not merged, so it carries the complete request list, each item as the SDK would
  have built it plus its own title.

The SDK retries nothing by default and ignores RetryInfo, so this adapter only translates what happened
into the error classes of `modules.errors`; how often to retry and how to split is the
orchestrator's business. What it guards itself, because the SDK does not:

- a total deadline per call (connect, send and the whole answer): the SDK's timeout is per read, so
  an answer that drips one byte a second would never end;
- redirects are not followed: httpx forwards the `x-goog-api-key` header to any origin;
- the key is scrubbed from every error text (Google's own error bodies can quote it);
- the caller hears when the request has left (httpcore's `trace` extension, set by an httpx request
  hook and routed to the call in flight by a context variable, reports the body written): building
  the request of 100 texts takes the SDK tens of milliseconds;
- every answer is checked: one vector per text, of the asked length, finite, with a norm that is
  neither zero nor overflowing nor underflowing, before it is L2-normalized.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import numpy as np
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from modules.embedders.base import EmbedRequest, Vectors, checked_vectors
from modules.embedding_models import model_info
from modules.errors import (
    EmbeddingError,
    PermanentEmbeddingError,
    ProviderConfigError,
    RateLimitedError,
    TransientEmbeddingError,
)
from modules.logs import scrub
from modules.settings import GEMINI_MAX_BATCH, Settings
from modules.text import estimate_tokens

if TYPE_CHECKING:
    from modules.embedders.gemini_batch import GeminiBatchEmbedder

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)s\s*$")
_RETRY_IN = re.compile(r"retry in ([0-9]*\.?[0-9]+)\s*(ms|s)\b", re.IGNORECASE)
_CONFIG_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "CONSUMER_SUSPENDED", "SERVICE_DISABLED"}
# A 400 whose message names one of these is about the settings, not about one chunk's text.
_CONFIG_WORDS = ("api key", "outputdimensionality", "output_dimensionality", "user location", "billing")
_ON_SENT: ContextVar[Callable[[], None] | None] = ContextVar("gemini_on_sent", default=None)


async def _request_leaving(request: Any) -> None:
    """httpx's request hook: have httpcore tell the call in flight (this task's) when its request's
    body has been written (the `trace` extension): that is when it left, which can be tens of
    milliseconds after this hook when other tasks keep the event loop busy meanwhile."""
    on_sent = _ON_SENT.get()
    extensions = getattr(request, "extensions", None)
    if on_sent is None or not isinstance(extensions, dict):
        return

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            on_sent()

    extensions["trace"] = trace


class GeminiEmbedder:
    def __init__(self, settings: Settings) -> None:
        if settings.google_api_key is None:
            raise ProviderConfigError("GOOGLE_API_KEY is not set")
        self._model = settings.model
        self._info = model_info(settings.model)
        self._dimensions = settings.dimensions
        self._task_type = settings.task_type
        self._use_title = settings.use_title
        self._deadline = settings.request_timeout
        self._key = settings.google_api_key.reveal()
        options = types.HttpOptions(
            timeout=int(settings.request_timeout * 1000),
            client_args={"follow_redirects": False},
            async_client_args={"follow_redirects": False, "event_hooks": {"request": [_request_leaving]}},
        )
        if settings.gemini_base_url:
            options.base_url = settings.gemini_base_url
        self._client = genai.Client(api_key=self._key, http_options=options)
        self._calls = 0

    @property
    def model_id(self) -> str:
        return f"{self._model}@{self._dimensions}"

    @property
    def model(self) -> str:
        return self._model

    @property
    def task_type(self) -> str:
        return self._task_type

    @property
    def client(self) -> genai.Client:
        """The SDK client, shared with the Batch API adapter (gemini_batch.py)."""
        return self._client

    def title_of(self, request: EmbedRequest) -> str | None:
        return request.title if self._use_title else None

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch(self) -> int:
        return GEMINI_MAX_BATCH

    @property
    def input_format(self) -> str:
        return self._info.input_format(self._task_type)

    def framing_tokens(self, title: str | None) -> int:
        framing = self._info.input_text("", self._task_type, title if self._use_title else None)
        return estimate_tokens(framing)

    def estimate_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def calls_made(self) -> int:
        return self._calls

    def batch_client(self) -> GeminiBatchEmbedder:
        from modules.embedders.gemini_batch import GeminiBatchEmbedder  # it builds on this adapter

        return GeminiBatchEmbedder(self)

    async def embed(self, requests: Sequence[EmbedRequest], on_sent: Callable[[], None] | None = None) -> Vectors:
        if not requests:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        if len(requests) > GEMINI_MAX_BATCH:
            raise PermanentEmbeddingError(f"{len(requests)} texts in one call; the API takes at most 100")
        titles = [r.title if self._use_title else None for r in requests]
        return await self._call([r.text for r in requests], titles, self._task_type, on_sent)

    async def embed_query(self, text: str) -> Vectors:
        return await self._call([text], [None], "RETRIEVAL_QUERY")

    def request_items(self, texts: Sequence[str], titles: Sequence[str | None], task_type: str) -> list[dict[str, Any]]:
        """The `requests` of a batchEmbedContents body, one per text, as the SDK builds them, each with
        its own title where the model takes one as a field."""
        info, model = self._info, f"models/{self._model}"
        items: list[dict[str, Any]] = []
        for text, title in zip(texts, titles, strict=True):
            item: dict[str, Any] = {"content": {"parts": [{"text": info.input_text(text, task_type, title)}]}}
            if info.task == "field":
                item["taskType"] = task_type
            title_field = info.title_field(task_type, title)
            if title_field is not None:
                item["title"] = title_field
            item["outputDimensionality"] = self._dimensions
            item["model"] = model
            items.append(item)
        return items

    async def _call(
        self, texts: list[str], titles: list[str | None], task_type: str, on_sent: Callable[[], None] | None = None
    ) -> Vectors:
        items = self.request_items(texts, titles, task_type)
        # One Content per text (never a list of strings: see the module docstring). The config says
        # the same as the items; per-item titles, which it cannot say, come in the body's own list.
        contents = [types.Content(parts=[types.Part(text=item["content"]["parts"][0]["text"])]) for item in items]
        config = types.EmbedContentConfig(
            task_type=task_type if self._info.task == "field" else None, output_dimensionality=self._dimensions
        )
        if any("title" in item for item in items):
            config.http_options = types.HttpOptions(extra_body={"requests": items})
        self._calls += 1
        leaving = _ON_SENT.set(on_sent)
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._client.aio.models.embed_content(
                    model=self._model,
                    contents=contents,
                    config=config,
                )
        except genai_errors.APIError as exc:
            raise self.scrubbed(classify_api_error(exc)) from None
        except TimeoutError:
            raise TransientEmbeddingError(
                f"no complete answer within {self._deadline:g}s (EMBEDDING_REQUEST_TIMEOUT)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self.scrubbed(
                TransientEmbeddingError(f"malformed answer: {type(exc).__name__}: {_first_line(exc)}", outage=False)
            ) from None
        except Exception as exc:
            kind = transport_failure(exc)
            if kind is None:
                raise
            unsent = never_sent(exc)
            raise self.scrubbed(
                TransientEmbeddingError(
                    f"{kind}: {type(exc).__name__}: {_first_line(exc)}", refused=unsent, unsent=unsent
                )
            ) from None
        finally:
            _ON_SENT.reset(leaving)
        embeddings = response.embeddings or []
        return self._checked([list(e.values or []) for e in embeddings], len(texts))

    def scrubbed(self, error: EmbeddingError) -> EmbeddingError:
        """The same error with the API key cut out of its text (error bodies may quote it)."""
        if self._key and self._key in str(error):
            error.args = (scrub(str(error), [self._key]),)
        return error

    def _checked(self, rows: list[list[float]], expected: int) -> Vectors:
        """Refuse an answer that doesn't fit the request; nothing wrong may reach the database."""
        if len(rows) != expected:
            raise TransientEmbeddingError(f"answer had {len(rows)} vectors for {expected} texts", outage=False)
        for row in rows:
            if len(row) != self._dimensions:
                raise TransientEmbeddingError(
                    f"answer had a vector of {len(row)} dimensions; {self._dimensions} were asked for", outage=False
                )
        return checked_vectors(np.asarray(rows, dtype=np.float64))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            await self._client.aio.aclose()


def classify_api_error(exc: genai_errors.APIError) -> EmbeddingError:
    """Sort an HTTP error from the API into rate-limited, transient, permanent or configuration."""
    code = int(exc.code or 0)
    status = str(exc.status or "")
    message = _api_message(exc)
    summary = f"{code} {status}: {message}".strip()
    if code == 429:
        kind, limit = quota_violation(exc.details)
        return RateLimitedError(
            summary, retry_delay_from(exc.details), kind, limit, per_day=is_per_day_quota(exc.details)
        )
    if 300 <= code < 400:
        location = _header(exc, "location") or "elsewhere"
        return ProviderConfigError(
            f"{code}: the API answered with a redirect to {location}; it was not followed, so the API key was "
            "not sent there. Check GOOGLE_GEMINI_BASE_URL"
        )
    if code in (408, 500, 502, 503, 504) or code >= 500:
        return TransientEmbeddingError(summary, refused=code in (500, 502, 503))
    if code in (401, 403, 404):
        return ProviderConfigError(summary)
    reasons = _error_reasons(exc.details)
    if reasons & _CONFIG_REASONS or any(word in message.lower() for word in _CONFIG_WORDS):
        return ProviderConfigError(summary)
    return PermanentEmbeddingError(summary)


def retry_delay_from(details: Any) -> float | None:
    """The server's requested wait: RetryInfo.retryDelay ("34s"), else "Please retry in 1.5s" in the text.
    None when it gave none, or one that can't be a wait (0s, negative, garbage): the caller backs off."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for item in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                value = float(match.group(1))
                return value if value > 0 else None
    match = _RETRY_IN.search(str(error.get("message", ""))) if isinstance(error, dict) else None
    if match:
        value = float(match.group(1))
        value = value / 1000 if match.group(2).lower() == "ms" else value
        return value if value > 0 else None
    return None


def is_per_day_quota(details: Any) -> bool:
    """Whether a 429 names a per-day quota (QuotaFailure quotaId '...PerDay...'). Google sends a RetryInfo
    of seconds with it too, but the quota only comes back the next day (midnight Pacific)."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for item in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in item.get("violations", []) or []:
                if isinstance(violation, dict) and "perday" in str(violation.get("quotaId", "")).lower():
                    return True
    return False


def quota_violation(details: Any) -> tuple[str | None, int | None]:
    """From QuotaFailure: whether the request or the token quota was hit, and its limit."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for item in error.get("details", []) if isinstance(error, dict) else []:
        if not (isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.QuotaFailure")):
            continue
        for violation in item.get("violations", []):
            metric = str(violation.get("quotaMetric", "")) + str(violation.get("quotaId", ""))
            kind = "tokens" if "token" in metric.lower() else "requests"
            try:
                return kind, int(str(violation.get("quotaValue", "")))
            except ValueError:
                return kind, None
    return None, None


def _error_reasons(details: Any) -> set[str]:
    error = details.get("error", details) if isinstance(details, dict) else {}
    items = error.get("details", []) if isinstance(error, dict) else []
    return {str(i.get("reason")) for i in items if isinstance(i, dict) and i.get("reason")}


def _api_message(exc: genai_errors.APIError) -> str:
    message = getattr(exc, "message", None)
    if not message and isinstance(exc.details, dict):
        message = exc.details.get("error", {}).get("message")
    text = str(message or "").strip()
    return text.splitlines()[0][:300] if text else ""


def _header(exc: genai_errors.APIError, name: str) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    try:
        value = headers.get(name) if headers is not None else None
    except Exception:  # a replay response or another stack without headers
        return None
    return str(value) if value else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


_TRANSPORT_MODULES = ("httpx", "httpx2", "httpcore", "aiohttp", "h11", "anyio")


def never_sent(exc: BaseException) -> bool:
    """Whether a transport error means the request never reached the server (no connection was made)."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    return any(cls.__name__ in ("ConnectError", "ConnectTimeout") for cls in type(exc).__mro__)


def transport_failure(exc: BaseException) -> str | None:
    """'timed out' or 'connection failed' for an error from whichever HTTP stack the SDK runs on
    (httpx, its fork httpx2, or aiohttp when installed), without importing them to name classes."""
    if isinstance(exc, (ConnectionError, OSError)):
        return "connection failed"
    classes = type(exc).__mro__
    if not any(cls.__module__.split(".")[0] in _TRANSPORT_MODULES for cls in classes):
        return None
    return "timed out" if any("Timeout" in cls.__name__ for cls in classes) else "connection failed"
