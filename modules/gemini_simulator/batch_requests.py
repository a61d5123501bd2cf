"""What a batch job is asked to do: the `asyncBatchEmbedContent` body and the JSONL input file.

The create body (Batch API reference, "models.asyncBatchEmbedContent") is
`{"batch": {"displayName", "inputConfig": {"requests": {"requests": [{"request": EmbedContentRequest,
"metadata": {...}}]}} | {"fileName": "files/..."}, "priority"}}`; the SDK sends
`inputConfig.file_name` in snake_case, which Google's parser accepts like camelCase. Inline requests
are validated whole when the job is created, like a batchEmbedContents body (one bad request: 400,
no job). A file is read when the job is created too, but its lines are judged one by one: a line
that is not JSON or not a valid `{"key", "request"}` is answered with an INVALID_ARGUMENT error in
the results, and the others are embedded (how Google reports bad lines is not documented).

Items are embedded one vector per request, all text parts of its content joined, for every model:
the SDK sends each string or Content of `inlined_requests` as its own request (no fusion, even for
gemini-embedding-2). A text over the model's input limit is truncated or, with
`over_limit=reject`, answered with an error item; so is a text containing the poison marker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import google_errors
from .batch_jobs import BatchItem, ItemError
from .config import SimulatorConfig
from .google_errors import ApiError
from .models import ModelSpec
from .parsing import EmbedItem, object_fields, parse_json, parse_request
from .tokens import count_tokens, truncate_to_tokens

INVALID_ARGUMENT = 3

_BODY_FIELDS = {"batch": ("batch",)}
_BATCH_FIELDS = {
    "model": ("model",),
    "name": ("name",),
    "display_name": ("displayName", "display_name"),
    "input_config": ("inputConfig", "input_config"),
    "priority": ("priority",),
    # output-only fields: accepted (they are fields of EmbedContentBatch) and ignored
    "output": ("output",),
    "create_time": ("createTime", "create_time"),
    "end_time": ("endTime", "end_time"),
    "update_time": ("updateTime", "update_time"),
    "batch_stats": ("batchStats", "batch_stats"),
    "state": ("state",),
}
_INPUT_FIELDS = {"file_name": ("fileName", "file_name"), "requests": ("requests",)}
_REQUESTS_FIELDS = {"requests": ("requests",)}
_INLINED_FIELDS = {"request": ("request",), "metadata": ("metadata",)}
_LINE_FIELDS = {"key": ("key",), "request": ("request",)}


@dataclass(frozen=True)
class BatchSpec:
    """A validated create request: inline `items`, or the `input_file` to read them from."""

    display_name: str
    priority: int
    items: list[BatchItem] | None = None
    input_file: str | None = None


def _int64(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise google_errors.field_violation(path, f"Invalid value at '{path}' (TYPE_INT64), {json.dumps(value)}")
    try:
        return int(value)
    except ValueError:
        raise google_errors.field_violation(
            path, f"Invalid value at '{path}' (TYPE_INT64), {json.dumps(value)}"
        ) from None


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise google_errors.field_violation(path, f"Invalid value at '{path}' (TYPE_STRING), {json.dumps(value)}")
    return value


def batch_item(
    item: EmbedItem, model: ModelSpec, config: SimulatorConfig, *, key: str | None = None, metadata: Any = None
) -> BatchItem:
    """A parsed request as a job item: truncated to the model's limit, or refused."""
    tokens = count_tokens(item.text)
    embed_text = item.text
    error: ItemError | None = None
    marker = config.poison_marker
    if marker and marker in item.text:
        error = ItemError(INVALID_ARGUMENT, "Request contains an invalid argument.")
    elif tokens > model.max_input_tokens:
        if config.over_limit == "reject":
            error = ItemError(
                INVALID_ARGUMENT,
                f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
                f"({model.max_input_tokens}).",
            )
        else:
            embed_text = truncate_to_tokens(item.text, model.max_input_tokens)
            tokens = model.max_input_tokens
    return BatchItem(item.text, embed_text, item.dimensions, tokens, key=key, metadata=metadata, error=error)


def _inline_items(raw: Any, model: ModelSpec, version: str, config: SimulatorConfig) -> list[BatchItem]:
    path = "batch.input_config.requests"
    fields = object_fields(raw, path, _REQUESTS_FIELDS, "InlinedEmbedContentRequests")
    requests = fields.get("requests")
    context = "EmbedContentBatch.input_config.requests.requests"
    if requests is None or (isinstance(requests, list) and not requests):
        raise google_errors.bad_request(f"* {context}: requests must not be empty.\n")
    if not isinstance(requests, list):
        raise google_errors.field_violation(
            f"{path}.requests", f"Invalid value at '{path}.requests', {json.dumps(requests)}"
        )
    items: list[BatchItem] = []
    for i, entry in enumerate(requests):
        entry_path = f"{path}.requests[{i}]"
        inlined = object_fields(entry, entry_path, _INLINED_FIELDS, "InlinedEmbedContentRequest")
        if "request" not in inlined:
            raise google_errors.bad_request(f"* {context}[{i}].request: request must be specified.\n")
        metadata = inlined.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise google_errors.field_violation(
                f"{entry_path}.metadata",
                f"Invalid value at '{entry_path}.metadata' (type.googleapis.com/"
                f"google.protobuf.Struct), {json.dumps(metadata)}",
            )
        parsed = parse_request(
            inlined["request"], f"{entry_path}.request", f"{context}[{i}].request", model, version, model.name
        )
        items.append(batch_item(parsed, model, config, metadata=metadata))
    return items


def parse_create(body: bytes, model: ModelSpec, version: str, config: SimulatorConfig) -> BatchSpec:
    """Validate an asyncBatchEmbedContent body (raises ApiError: a 400 in Google's shape)."""
    top = object_fields(parse_json(body), "", _BODY_FIELDS, "AsyncBatchEmbedContentRequest")
    if "batch" not in top:
        raise google_errors.bad_request("* AsyncBatchEmbedContentRequest.batch: batch must be specified.\n")
    fields = object_fields(top["batch"], "batch", _BATCH_FIELDS, "EmbedContentBatch")
    if "model" in fields and _string(fields["model"], "batch.model").removeprefix("models/") != model.name:
        raise google_errors.bad_request(
            f"* EmbedContentBatch.model: the model in the body must be the one in the URL (models/{model.name}).\n"
        )
    display_name = _string(fields.get("display_name", ""), "batch.display_name")
    priority = _int64(fields.get("priority", 0), "batch.priority")
    if "input_config" not in fields:
        raise google_errors.bad_request("* EmbedContentBatch.input_config: input_config must be specified.\n")
    source = object_fields(fields["input_config"], "batch.input_config", _INPUT_FIELDS, "InputEmbedContentConfig")
    if len(source) != 1:
        raise google_errors.bad_request(
            "* EmbedContentBatch.input_config: exactly one of file_name or requests must be set.\n"
        )
    if "file_name" in source:
        file_name = _string(source["file_name"], "batch.input_config.file_name")
        if not file_name.startswith("files/"):
            file_name = f"files/{file_name}"
        return BatchSpec(display_name, priority, input_file=file_name)
    return BatchSpec(display_name, priority, items=_inline_items(source["requests"], model, version, config))


def _line_item(line: bytes, model: ModelSpec, version: str, config: SimulatorConfig) -> BatchItem:
    key: str | None = None
    try:
        fields = object_fields(parse_json(line), "", _LINE_FIELDS, "batch input line")
        if "key" in fields:
            key = _string(fields["key"], "key")
        if "request" not in fields:
            raise google_errors.bad_request("* request: request must be specified.\n")
        parsed = parse_request(fields["request"], "request", "EmbedContentRequest", model, version, model.name)
    except ApiError as error:
        return BatchItem("", "", 0, 0, key=key, error=ItemError(INVALID_ARGUMENT, error.message))
    return batch_item(parsed, model, config, key=key)


def parse_input_file(data: bytes, model: ModelSpec, version: str, config: SimulatorConfig) -> list[BatchItem]:
    """One item per non-blank line of a JSONL input file, in order."""
    return [_line_item(line, model, version, config) for line in data.split(b"\n") if line.strip()]
