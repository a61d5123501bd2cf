"""Embedder on Google's Gemini API through the official `google-genai` SDK (async).

One `batchEmbedContents` call per batch (the SDK sends every embed_content call that way). The SDK
retries nothing by default and ignores RetryInfo, so this adapter only translates what happened
into the error classes of `modules.errors`; how often to retry and how to split is the
orchestrator's business. What it guards itself, because the SDK does not:

- a total deadline per call (connect, send and the whole answer): the SDK's timeout is per read, so
  an answer that drips one byte a second would never end;
- redirects are not followed: httpx forwards the `x-goog-api-key` header to any origin;
- the key is scrubbed from every error text (Google's own error bodies can quote it);
- every answer is checked: one vector per text, of the asked length, finite, with a norm that is
  neither zero nor overflowing nor underflowing, before it is L2-normalized.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from modules.embedders.base import EmbedRequest, Vectors, checked_vectors
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

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)s\s*$")
_RETRY_IN = re.compile(r"retry in ([0-9]*\.?[0-9]+)\s*(ms|s)\b", re.IGNORECASE)
_CONFIG_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "CONSUMER_SUSPENDED", "SERVICE_DISABLED"}
# A 400 whose message names one of these is about the settings, not about one chunk's text.
_CONFIG_WORDS = ("api key", "outputdimensionality", "output_dimensionality", "user location", "billing")


class GeminiEmbedder:
    def __init__(self, settings: Settings) -> None:
        if settings.google_api_key is None:
            raise ProviderConfigError("GOOGLE_API_KEY is not set")
        self._model = settings.model
        self._dimensions = settings.dimensions
        self._task_type = settings.task_type
        self._use_title = settings.use_title and settings.task_type == "RETRIEVAL_DOCUMENT"
        self._deadline = settings.request_timeout
        self._key = settings.google_api_key.reveal()
        options = types.HttpOptions(
            timeout=int(settings.request_timeout * 1000),
            client_args={"follow_redirects": False},
            async_client_args={"follow_redirects": False},
        )
        if settings.gemini_base_url:
            options.base_url = settings.gemini_base_url
        self._client = genai.Client(api_key=self._key, http_options=options)
        self._calls = 0

    @property
    def model_id(self) -> str:
        return f"{self._model}@{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch(self) -> int:
        return GEMINI_MAX_BATCH

    def estimate_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def calls_made(self) -> int:
        return self._calls

    async def embed(self, requests: Sequence[EmbedRequest]) -> Vectors:
        if not requests:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        if len(requests) > GEMINI_MAX_BATCH:
            raise PermanentEmbeddingError(f"{len(requests)} texts in one call; the API takes at most 100")
        # The API takes one title per call, so a batch that spans documents costs one call per title.
        parts: list[Vectors] = []
        for title, texts in self._group_by_title(requests):
            parts.append(await self._call(texts, title))
        return np.vstack(parts) if len(parts) > 1 else parts[0]

    async def embed_query(self, text: str) -> Vectors:
        return await self._call([text], None, task_type="RETRIEVAL_QUERY")

    def _group_by_title(self, requests: Sequence[EmbedRequest]) -> list[tuple[str | None, list[str]]]:
        groups: list[tuple[str | None, list[str]]] = []
        for request in requests:
            title = request.title if self._use_title else None
            if groups and groups[-1][0] == title:
                groups[-1][1].append(request.text)
            else:
                groups.append((title, [request.text]))
        return groups

    async def _call(self, texts: list[str], title: str | None, task_type: str | None = None) -> Vectors:
        config = types.EmbedContentConfig(
            task_type=task_type or self._task_type, output_dimensionality=self._dimensions, title=title or None
        )
        self._calls += 1
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._client.aio.models.embed_content(
                    model=self._model,
                    contents=texts,
                    config=config,
                )
        except genai_errors.APIError as exc:
            raise self._scrubbed(classify_api_error(exc)) from None
        except TimeoutError:
            raise TransientEmbeddingError(
                f"no complete answer within {self._deadline:g}s (EMBEDDING_REQUEST_TIMEOUT)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._scrubbed(
                TransientEmbeddingError(f"malformed answer: {type(exc).__name__}: {_first_line(exc)}", outage=False)
            ) from None
        except Exception as exc:
            kind = _transport_failure(exc)
            if kind is None:
                raise
            raise self._scrubbed(TransientEmbeddingError(f"{kind}: {type(exc).__name__}: {_first_line(exc)}")) from None
        embeddings = response.embeddings or []
        return self._checked([list(e.values or []) for e in embeddings], len(texts))

    def _scrubbed(self, error: EmbeddingError) -> EmbeddingError:
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


def _transport_failure(exc: BaseException) -> str | None:
    """'timed out' or 'connection failed' for an error from whichever HTTP stack the SDK runs on
    (httpx, its fork httpx2, or aiohttp when installed), without importing them to name classes."""
    if isinstance(exc, (ConnectionError, OSError)):
        return "connection failed"
    classes = type(exc).__mro__
    if not any(cls.__module__.split(".")[0] in _TRANSPORT_MODULES for cls in classes):
        return None
    return "timed out" if any("Timeout" in cls.__name__ for cls in classes) else "connection failed"
