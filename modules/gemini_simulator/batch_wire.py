"""The JSON the Batch and Files APIs answer with.

A batch is a long-running `Operation` (Batch API reference; the envelope confirmed against the live
API by third-party clients): `{"name": "batches/<id>", "metadata": EmbedContentBatch, "done": true,
"response" | "error"}`. `done` is absent while the job is pending or running (proto3 omits false),
`metadata` carries the batch with `@type`, its `name` again, `model`, `displayName`, `createTime`,
`updateTime`, `endTime` once ended, `batchStats` (int64 counts as JSON strings, zero counts omitted)
and `state` (`BATCH_STATE_*`). A succeeded job's output (`inlinedResponses.inlinedResponses[]` or
`responsesFile`) is in `metadata.output` (what the SDK reads) and again in the Operation's
`response` (what Google's REST example reads), with an `@type` there. A failed, cancelled or expired
job has an Operation `error` (cancelled: code 1 CANCELLED, as the reference says) and no output.

One result, inline or as a JSONL line of a result file: `{"response": {"embedding": {"values":
[...]}, "tokenCount": "7"}}` or `{"error": {"code", "message"}}`; inline results carry the request's
`metadata` when it had one, file lines the line's `key`. `tokenCount` is the SDK's
`SingleEmbedContentResponse.token_count` (an int64, so a JSON string, as go-genai decodes it);
Google's reference shows only `embedding`, so `batch_token_count=false` leaves it out.

Outputs are large (a vector per item, twice in every answer), so they are encoded once, with the
fast float encoder of `wire`, and spliced into each answer as bytes.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from .batch_jobs import BatchItem, BatchJob, BatchState
from .files_store import StoredFile
from .wire import encode_values

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatchOutput"
CANCELLED = 1
DEADLINE_EXCEEDED = 4
INTERNAL = 13
FILE_LIFETIME_SECONDS = 48 * 3600  # uploaded files are kept 48 hours (Files API guide)

_JOB_ERRORS = {
    BatchState.FAILED: (INTERNAL, "The batch failed: an internal error occurred while processing it."),
    BatchState.CANCELLED: (CANCELLED, "The batch was cancelled."),
    BatchState.EXPIRED: (DEADLINE_EXCEEDED, "The batch expired: it was pending or running for too long."),
}


def timestamp(seconds: float) -> str:
    """RFC 3339, Z-normalised, with microseconds (Google writes 0, 3, 6 or 9 fractional digits)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def batch_stats(job: BatchJob) -> dict[str, str]:
    counts = {"requestCount": len(job.items)}
    if job.state is BatchState.SUCCEEDED:
        counts |= {"successfulRequestCount": job.succeeded_items, "failedRequestCount": job.failed_items}
    elif not job.state.terminal:
        counts["pendingRequestCount"] = len(job.items)
    return {name: str(count) for name, count in counts.items() if count}


def _metadata(job: BatchJob) -> dict[str, Any]:
    metadata: dict[str, Any] = {"@type": BATCH_TYPE, "model": f"models/{job.model.name}"}
    if job.display_name:
        metadata["displayName"] = job.display_name
    if job.input_file is not None:
        metadata["inputConfig"] = {"fileName": job.input_file}
    metadata["createTime"] = timestamp(job.create_time)
    metadata["updateTime"] = timestamp(job.update_time)
    if job.end_time is not None:
        metadata["endTime"] = timestamp(job.end_time)
    stats = batch_stats(job)
    if stats:
        metadata["batchStats"] = stats
    metadata["state"] = job.state.value
    if job.priority:
        metadata["priority"] = str(job.priority)
    metadata["name"] = job.name
    return metadata


def operation_body(job: BatchJob) -> bytes:
    """The Operation for `job`, as sent by create, get and (one per job) list."""
    operation: dict[str, Any] = {"name": job.name, "metadata": _metadata(job)}
    if job.state.terminal:
        operation["done"] = True
    error = _JOB_ERRORS.get(job.state)
    if error is not None:
        operation["error"] = {"code": error[0], "message": error[1]}
    if job.output_members is None:
        return _dumps(operation)
    mark = f"@@output-{uuid.uuid4().hex}@@"
    operation["metadata"]["output"] = mark
    operation["response"] = mark
    body = _dumps(operation)
    output = b"{" + job.output_members + b"}"
    response = b'{"@type":"' + OUTPUT_TYPE.encode() + b'",' + job.output_members + b"}"
    quoted = _dumps(mark)
    head, middle, tail = body.split(quoted)
    return head + output + middle + response + tail


def list_body(jobs: Sequence[BatchJob], next_page_token: str | None) -> bytes:
    """A ListOperationsResponse (`{}` when empty, as proto3 omits an empty list)."""
    members: list[bytes] = []
    if jobs:
        members.append(b'"operations":[' + b",".join(operation_body(job) for job in jobs) + b"]")
    if next_page_token:
        members.append(b'"nextPageToken":' + _dumps(next_page_token))
    return b"{" + b",".join(members) + b"}"


def _result(item: BatchItem, values: bytes | None, token_count: bool) -> bytes:
    if item.error is not None:
        return b'"error":' + _dumps(item.error.payload())
    assert values is not None
    response = b'{"embedding":{"values":[' + values + b"]}"
    if token_count:
        response += b',"tokenCount":"' + str(item.tokens).encode() + b'"'
    return b'"response":' + response + b"}"


def _encoded(vectors: Sequence[npt.NDArray[np.float32] | None]) -> list[bytes | None]:
    present = [v for v in vectors if v is not None]
    encoded = iter(encode_values(present))
    return [None if v is None else next(encoded) for v in vectors]


def inline_output(
    items: Sequence[BatchItem], vectors: Sequence[npt.NDArray[np.float32] | None], token_count: bool
) -> bytes:
    """The members of an inline job's EmbedContentBatchOutput, results in input order."""
    entries: list[bytes] = []
    for item, values in zip(items, _encoded(vectors), strict=True):
        entry = _result(item, values, token_count)
        if item.metadata is not None:
            entry += b',"metadata":' + _dumps(item.metadata)
        entries.append(b"{" + entry + b"}")
    return b'"inlinedResponses":{"inlinedResponses":[' + b",".join(entries) + b"]}"


def result_file(
    items: Sequence[BatchItem], vectors: Sequence[npt.NDArray[np.float32] | None], token_count: bool
) -> bytes:
    """A file job's results: one JSON line per input line, in input order, with its key."""
    lines: list[bytes] = []
    for item, values in zip(items, _encoded(vectors), strict=True):
        key = b'"key":' + _dumps(item.key) + b"," if item.key is not None else b""
        lines.append(b"{" + key + _result(item, values, token_count) + b"}\n")
    return b"".join(lines)


def file_output(file_name: str) -> bytes:
    return b'"responsesFile":' + _dumps(file_name)


def file_resource(stored: StoredFile, base_url: str) -> dict[str, Any]:
    """A File as the Files API describes it (`sizeBytes` an int64 string, `sha256Hash` bytes in
    base64)."""
    resource: dict[str, Any] = {"name": stored.name}
    if stored.display_name:
        resource["displayName"] = stored.display_name
    resource |= {
        "mimeType": stored.mime_type,
        "sizeBytes": str(len(stored.data)),
        "createTime": timestamp(stored.create_time),
        "updateTime": timestamp(stored.create_time),
        "expirationTime": timestamp(stored.create_time + FILE_LIFETIME_SECONDS),
        "sha256Hash": base64.b64encode(stored.sha256.encode("ascii")).decode("ascii"),
        "uri": f"{base_url}/v1beta/{stored.name}",
    }
    if stored.source == "GENERATED":
        resource["downloadUri"] = f"{base_url}/download/v1beta/{stored.name}:download?alt=media"
    resource |= {"state": "ACTIVE", "source": stored.source}
    return resource


def file_body(stored: StoredFile, base_url: str) -> bytes:
    return _dumps(file_resource(stored, base_url))
