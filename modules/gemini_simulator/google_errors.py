"""Google's error bodies: `{"error": {"code", "message", "status", "details"}}`, with the wording
the Generative Language API really uses where it is known."""

from __future__ import annotations

import json
from typing import Any

_STATUS_BY_CODE = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

SERVICE = "generativelanguage.googleapis.com"
RATE_LIMIT_DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"


class ApiError(Exception):
    """An error answer; `body()` is what goes on the wire."""

    def __init__(
        self, code: int, message: str, *, status: str | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_BY_CODE.get(code, "UNKNOWN")
        self.details = details

    def payload(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def body(self) -> bytes:
        return json.dumps(self.payload(), ensure_ascii=False, indent=2).encode("utf-8")


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def field_violation(field: str | None, message: str) -> ApiError:
    """A 400 whose details hold a google.rpc.BadRequest, as Google's JSON/proto parser answers."""
    violation: dict[str, str] = {"description": message}
    if field is not None:
        violation = {"field": field, "description": message}
    details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}]
    return ApiError(400, message, details=details)


def missing_key() -> ApiError:
    return ApiError(
        403,
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def invalid_key() -> ApiError:
    return ApiError(
        400,
        "API key not valid. Please pass a valid API key.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    )


def model_not_found(model: str, version: str, method: str) -> ApiError:
    return ApiError(
        404,
        f"models/{model} is not found for API version {version}, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods.",
    )


def path_not_found(path: str) -> ApiError:
    return ApiError(404, f"The requested URL {path} was not found on this server.")


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, f"Method {method} is not allowed for this URL.")


def internal() -> ApiError:
    return ApiError(
        500,
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


def overloaded() -> ApiError:
    return ApiError(503, "The model is overloaded. Please try again later.")


def too_large(limit: int) -> ApiError:
    return ApiError(400, f"Request payload size exceeds the limit: {limit} bytes.")


def key_echoed(key: str) -> ApiError:
    """A 400 quoting the caller's API key. Google's own bodies do this in places: an invalid key's
    400 may carry a DebugInfo "Invalid API key: <key>" (github.com/google/timesketch/pull/3703), a
    suspended key's 403 names "api_key:<key>" twice (github.com/continuedev/continue/issues/10902);
    misconfigured gateways put it in the message. Here it is in both, so a client that logs or
    raises `str(error)` leaks it."""
    return ApiError(
        400,
        f"Invalid API key: {key}",
        details=[{"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {key}"}],
    )


def file_not_found(file_id: str) -> ApiError:
    """What the Files API answers for a file that does not exist or is not the caller's (a 403, not
    a 404: github.com/googleapis/python-genai/issues/1218, google-gemini/deprecated-generative-ai-python
    issues/692)."""
    return ApiError(403, f"You do not have permission to access the File {file_id} or it may not exist.")


def not_found() -> ApiError:
    """Google's generic NOT_FOUND (the wording for an unknown batch is not documented)."""
    return ApiError(404, "Requested entity was not found.")
