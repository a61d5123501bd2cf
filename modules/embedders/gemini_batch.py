"""BatchEmbedder on Google's Batch API for embeddings, through google-genai (`batches.create_embeddings`,
`batches.get/list`, `files.upload/download`), sharing the online adapter's client, request shape (one
request per text, each with its own title and the model's task framing: `GeminiEmbedder.request_items`)
and error translation.

- A job whose request body fits under Google's 20 MB inline limit (with a margin) goes inline; the SDK's
  inline shape has one config for all items, so the complete list of per-item requests is sent through
  `HttpOptions.extra_body` (the SDK merges dicts and replaces lists), each with a metadata key: its index.
- A larger job goes as a JSONL file through the Files API, one `{"key", "request"}` line per text.
- Results are matched to requests by key (metadata key inline; `key` in the result file), falling back
  to order for inline answers without metadata. The SDK files an inline job's results under
  `inlined_embed_content_responses`, or `inlined_responses` when every item failed: both are read.
- The SDK drops a failed job's error; its state says what happened.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from typing import Any

from google.genai import errors as genai_errors
from google.genai import types

from modules.embedders.base import EmbedRequest
from modules.embedders.batch_base import ItemResult, JobState, RemoteJob
from modules.embedders.gemini import GeminiEmbedder, classify_api_error, never_sent, transport_failure
from modules.errors import TransientEmbeddingError

INLINE_LIMIT_BYTES = 18_000_000  # Google refuses inline request bodies over 20 MB: keep a margin
_STATES = {
    "JOB_STATE_PENDING": JobState.PENDING,
    "JOB_STATE_QUEUED": JobState.PENDING,
    "JOB_STATE_RUNNING": JobState.RUNNING,
    "JOB_STATE_SUCCEEDED": JobState.SUCCEEDED,
    "JOB_STATE_FAILED": JobState.FAILED,
    "JOB_STATE_CANCELLED": JobState.CANCELLED,
    "JOB_STATE_CANCELLING": JobState.RUNNING,
    "JOB_STATE_EXPIRED": JobState.EXPIRED,
}


class GeminiBatchEmbedder:
    def __init__(self, online: GeminiEmbedder, inline_limit_bytes: int = INLINE_LIMIT_BYTES) -> None:
        self._online = online
        self._client = online.client
        self._inline_limit = inline_limit_bytes

    @property
    def model_id(self) -> str:
        return self._online.model_id

    @property
    def dimensions(self) -> int:
        return self._online.dimensions

    async def submit(self, display_name: str, requests: Sequence[EmbedRequest]) -> RemoteJob:
        items = self._online.request_items(
            [r.text for r in requests], [self._online.title_of(r) for r in requests], self._online.task_type
        )
        requests_json = [{"request": _without_model(item), "metadata": {"key": str(n)}} for n, item in enumerate(items)]
        size = len(json.dumps(requests_json, ensure_ascii=False).encode("utf-8"))
        config: dict[str, Any] = {"display_name": display_name}
        if size <= self._inline_limit:
            contents = [types.Content(parts=[types.Part(text=item["content"]["parts"][0]["text"])]) for item in items]
            src: dict[str, Any] = {
                "inlined_requests": {
                    "contents": contents,
                    "config": {"output_dimensionality": self.dimensions},
                }
            }
            body = {"batch": {"inputConfig": {"requests": {"requests": requests_json}}}}
            config["http_options"] = types.HttpOptions(extra_body=body)
        else:
            lines = "".join(
                json.dumps({"key": str(n), "request": _without_model(item)}, ensure_ascii=False) + "\n"
                for n, item in enumerate(items)
            )
            uploaded = await self._guard(
                self._client.aio.files.upload(
                    file=io.BytesIO(lines.encode("utf-8")),
                    config={"mime_type": "application/jsonl", "display_name": display_name},
                )
            )
            src = {"file_name": str(uploaded.name)}
        with warnings.catch_warnings():  # create_embeddings is marked experimental by the SDK
            warnings.simplefilter("ignore")
            job = await self._guard(
                self._client.aio.batches.create_embeddings(model=self._online.model, src=src, config=config)  # type: ignore[arg-type]
            )
        return _remote(job)

    async def get(self, name: str) -> RemoteJob:
        return _remote(await self._guard(self._client.aio.batches.get(name=name)))

    async def find(self, display_name: str) -> RemoteJob | None:
        pager = await self._guard(self._client.aio.batches.list(config={"page_size": 100}))
        async for job in pager:
            if job.display_name == display_name:
                return _remote(job)
        return None

    async def results(self, job: RemoteJob, count: int) -> list[ItemResult]:
        full = await self._guard(self._client.aio.batches.get(name=job.name))
        dest = full.dest
        by_key: dict[int, ItemResult] = {}
        if dest is not None and dest.file_name:
            data = await self._guard(self._client.aio.files.download(file=dest.file_name))
            for line in bytes(data).decode("utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    key = _index(entry.get("key"))
                    if key is not None:
                        by_key[key] = _item(entry.get("response"), entry.get("error"))
        elif dest is not None:
            entries = dest.inlined_embed_content_responses or dest.inlined_responses or []
            for position, entry in enumerate(entries):
                key = _index((entry.metadata or {}).get("key")) if entry.metadata else None
                response = entry.response.model_dump(exclude_none=True) if entry.response else None
                error = entry.error.model_dump(exclude_none=True) if entry.error else None
                by_key[position if key is None else key] = _item(response, error)
        missing = ItemResult(None, "the job answered nothing for this request")
        return [by_key.get(n, missing) for n in range(count)]

    async def cancel(self, name: str) -> None:
        await self._guard(self._client.aio.batches.cancel(name=name))

    async def aclose(self) -> None:
        return None  # the online adapter owns the client

    async def _guard(self, call: Any) -> Any:
        """Await an SDK call, with the online adapter's error translation (and its key scrubbing)."""
        try:
            return await call
        except genai_errors.APIError as exc:
            raise self._online.scrubbed(classify_api_error(exc)) from None
        except TimeoutError as exc:
            raise TransientEmbeddingError(f"the Batch API did not answer: {type(exc).__name__}") from None
        except Exception as exc:
            kind = transport_failure(exc)
            if kind is None:
                raise
            unsent = never_sent(exc)
            raise TransientEmbeddingError(
                f"the Batch API: {kind}: {type(exc).__name__}", refused=unsent, unsent=unsent
            ) from None


def _without_model(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "model"}


def _index(key: object) -> int | None:
    try:
        return int(str(key))
    except ValueError:
        return None


def _item(response: Any, error: Any) -> ItemResult:
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        return ItemResult(None, f"{code} {message}".strip() if code is not None else str(message))
    embedding = (response or {}).get("embedding") or {}
    values = embedding.get("values")
    tokens = (response or {}).get("token_count", (response or {}).get("tokenCount"))
    return ItemResult(
        tuple(float(v) for v in values) if values is not None else None,
        None if values is not None else "the job's answer held no vector",
        int(tokens) if tokens is not None else None,
    )


def _remote(job: Any) -> RemoteJob:
    state = _STATES.get(str(getattr(job.state, "value", job.state)), JobState.UNKNOWN)
    error = getattr(job, "error", None)
    return RemoteJob(str(job.name), job.display_name, state, str(error.message) if error is not None else None)
