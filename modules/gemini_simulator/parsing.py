"""Request bodies of embedContent / batchEmbedContents: parsed and validated the way Google's
proto-JSON front end does (camelCase or snake_case names, unknown names rejected, typed values)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .google_errors import ApiError, bad_request, field_violation
from .models import MAX_BATCH, MODELS, ModelSpec

__all__ = [
    "MAX_BATCH",
    "MODELS",
    "TASK_TYPES",
    "EmbedItem",
    "ModelSpec",
    "object_fields",
    "parse_batch",
    "parse_json",
    "parse_request",
    "parse_single",
]

TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)


@dataclass(frozen=True)
class EmbedItem:
    text: str
    dimensions: int
    task_type: str | None
    title: str | None


# proto field name -> accepted JSON names
_REQUEST_FIELDS = {
    "model": ("model",),
    "content": ("content",),
    "task_type": ("taskType", "task_type"),
    "title": ("title",),
    "output_dimensionality": ("outputDimensionality", "output_dimensionality"),
    "embed_content_config": ("embedContentConfig", "embed_content_config"),
}
_CONFIG_FIELDS = {
    "task_type": ("taskType", "task_type"),
    "title": ("title",),
    "output_dimensionality": ("outputDimensionality", "output_dimensionality"),
    "auto_truncate": ("autoTruncate", "auto_truncate"),
}
_CONTENT_FIELDS = {"parts": ("parts",), "role": ("role",)}
_BATCH_FIELDS = {"requests": ("requests",), "model": ("model",)}


def _json_repr(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _invalid_value(path: str, type_name: str, value: Any) -> ApiError:
    return field_violation(path, f"Invalid value at '{path}' ({type_name}), {_json_repr(value)}")


def _fields(obj: Any, path: str, spec: Mapping[str, tuple[str, ...]], type_name: str) -> dict[str, Any]:
    """The object's fields keyed by proto name; unknown names rejected like Google does."""
    if not isinstance(obj, dict):
        raise _invalid_value(path or "", type_name, obj)
    by_json = {json_name: proto for proto, names in spec.items() for json_name in names}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        proto = by_json.get(key)
        if proto is None:
            where = f"'{path}'" if path else "root"
            message = f'Invalid JSON payload received. Unknown name "{key}" at {where}: Cannot find field.'
            raise field_violation(path or None, message)
        if value is not None:
            out[proto] = value
    return out


def object_fields(obj: Any, path: str, spec: Mapping[str, tuple[str, ...]], type_name: str) -> dict[str, Any]:
    """A JSON object's fields keyed by proto name (`spec`: proto name -> accepted JSON names);
    unknown names and non-objects are answered 400 the way Google's parser answers them."""
    return _fields(obj, path, spec, type_name)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise field_violation(None, "Invalid JSON payload received. Invalid UTF-8 in payload.") from None
    except json.JSONDecodeError as exc:
        line = exc.doc.splitlines()[exc.lineno - 1] if exc.doc.splitlines() else ""
        start = max(exc.colno - 40, 0)
        snippet = line[start : exc.colno + 40]
        caret = " " * (exc.colno - 1 - start) + "^"
        reason = "Unexpected end of string." if exc.pos >= len(exc.doc) else "Unexpected token."
        message = f"Invalid JSON payload received. {reason}\n{snippet}\n{caret}"
        raise field_violation(None, message) from None


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _invalid_value(path, "TYPE_STRING", value)
    return value


def _int32(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise _invalid_value(path, "TYPE_INT32", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise _invalid_value(path, "TYPE_INT32", value)


def _task_type(value: Any, path: str, version: str) -> str:
    if not isinstance(value, str) or value not in TASK_TYPES:
        raise _invalid_value(path, f"type.googleapis.com/google.ai.generativelanguage.{version}.TaskType", value)
    return value


def _text(content: Any, path: str, context: str, model: ModelSpec) -> str:
    """The content's text parts joined with nothing between them (one vector per content, however
    many parts; how Google joins them is not documented)."""
    fields = _fields(content, path, _CONTENT_FIELDS, "content")
    parts = fields.get("parts")
    if parts is None or (isinstance(parts, list) and not parts):
        raise bad_request(f"* {context}.parts: contents.parts must not be empty.\n")
    if not isinstance(parts, list):
        raise _invalid_value(f"{path}.parts", "type.googleapis.com/google.ai.generativelanguage.Part", parts)
    texts: list[str] = []
    for i, part in enumerate(parts):
        part_path = f"{path}.parts[{i}]"
        if not isinstance(part, dict):
            raise _invalid_value(part_path, "type.googleapis.com/google.ai.generativelanguage.Part", part)
        if "text" not in part:
            # gemini-embedding-2 embeds images, audio, video and PDFs too; the simulator does not
            what = (
                "the simulator embeds text parts only"
                if model.multimodal
                else "only text parts can be embedded by this model"
            )
            raise bad_request(f"* {context}.parts[{i}]: {what}.\n")
        texts.append(_string(part["text"], f"{part_path}.text"))
    text = "".join(texts)
    if not text:
        raise bad_request("The text content is empty.")
    return text


def _item(raw: Any, path: str, context: str, model: ModelSpec, version: str, batch_model: str | None) -> EmbedItem:
    prefix = f"{path}." if path else ""
    fields = _fields(raw, path, _REQUEST_FIELDS, "EmbedContentRequest")
    nested: dict[str, Any] = {}
    if "embed_content_config" in fields:
        nested = _fields(fields["embed_content_config"], f"{prefix}embed_content_config", _CONFIG_FIELDS, "config")

    def pick(name: str) -> tuple[Any, str]:
        if name in fields:
            return fields[name], f"{prefix}{name}"
        return nested.get(name), f"{prefix}embed_content_config.{name}"

    if batch_model is not None and "model" in fields:
        own = _string(fields["model"], f"{prefix}model")
        if own.removeprefix("models/") != batch_model:
            raise bad_request(
                f"* {context}.model: the model of every request must be the batch's model "
                f"(models/{batch_model}), got {own}.\n"
            )
    if "content" not in fields:
        raise bad_request(f"* {context}.content: content must be specified.\n")
    text = _text(fields["content"], f"{prefix}content", f"{context}.content", model)
    task_value, task_path = pick("task_type")
    task_type = _task_type(task_value, task_path, version) if task_value is not None else None
    title_value, title_path = pick("title")
    title = _string(title_value, title_path) if title_value is not None else None
    # no served model refuses these (gemini-embedding-2 ignores them); the wording is the simulator's
    if task_type is not None and not model.accepts_task_type:
        raise bad_request(f"* {context}.task_type: task_type is not supported by models/{model.name}.\n")
    if title is not None and not model.accepts_title:
        raise bad_request(f"* {context}.title: title is not supported by models/{model.name}.\n")
    dims_value, dims_path = pick("output_dimensionality")
    dimensions = model.native_dimensions
    if dims_value is not None:
        dimensions = _int32(dims_value, dims_path)
        if not model.min_dimensions <= dimensions <= model.max_dimensions:
            raise bad_request(
                f"* {context}.output_dimensionality: output_dimensionality must be between "
                f"{model.min_dimensions} and {model.max_dimensions} for models/{model.name}, "
                f"got {dimensions}.\n"
            )
    return EmbedItem(text=text, dimensions=dimensions, task_type=task_type, title=title)


def batch_size(data: Any) -> int | None:
    """The number of requests in a parsed batch body, if it has a list of them."""
    if isinstance(data, dict) and isinstance(data.get("requests"), list):
        return len(data["requests"])
    return None


def parse_batch(data: Any, model: ModelSpec, version: str) -> list[EmbedItem]:
    """Validate a batchEmbedContents body (already JSON-decoded)."""
    fields = _fields(data, "", _BATCH_FIELDS, "BatchEmbedContentsRequest")
    requests = fields.get("requests")
    if requests is None or (isinstance(requests, list) and not requests):
        raise bad_request("* BatchEmbedContentsRequest.requests: requests must not be empty.\n")
    if not isinstance(requests, list):
        raise _invalid_value(
            "requests", f"type.googleapis.com/google.ai.generativelanguage.{version}.EmbedContentRequest", requests
        )
    if len(requests) > MAX_BATCH:
        raise bad_request(f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch\n")
    return [
        _item(raw, f"requests[{i}]", f"BatchEmbedContentsRequest.requests[{i}]", model, version, model.name)
        for i, raw in enumerate(requests)
    ]


def parse_single(data: Any, model: ModelSpec, version: str) -> EmbedItem:
    """Validate an embedContent body (already JSON-decoded)."""
    return _item(data, "", "EmbedContentRequest", model, version, None)


def parse_request(
    raw: Any, path: str, context: str, model: ModelSpec, version: str, batch_model: str | None = None
) -> EmbedItem:
    """Validate one EmbedContentRequest found at `path` (a JSON path, for field violations) and
    `context` (the proto path Google's messages name); `batch_model`, when given, is the model every
    request's own `model` field must name."""
    return _item(raw, path, context, model, version, batch_model)
