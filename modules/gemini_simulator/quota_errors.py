"""The bodies of a 429: Google's RESOURCE_EXHAUSTED with its variants, and the bare ones a proxy or
Vertex AI sends instead.

Google's Gemini API body for a per-day embedding quota, as captured from the live API and quoted
verbatim in public client tests (other public captures agree on every field):

    {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
      "message": "You exceeded your current quota, ... \\n* Quota exceeded for metric:
                  generativelanguage.googleapis.com/embed_content_free_tier_requests, limit: 1000,
                  model: gemini-embedding-1.0\\nPlease retry in 18.412144672s.",
      "details": [
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [...]},
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
           "quotaMetric": "generativelanguage.googleapis.com/embed_content_free_tier_requests",
           "quotaId": "EmbedContentRequestsPerDayPerUserPerProjectPerModel-FreeTier",
           "quotaDimensions": {"location": "global", "model": "gemini-embedding-1.0"},
           "quotaValue": "1000"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "18s"}]}}

Note what it says about the per-day quota: the metric name is the same as the per-minute one
(`embed_content_free_tier_requests`); only `quotaId` says "PerDay". And the retry delay is seconds,
not the hours until the day resets (several reports, e.g. "the 38s retryDelay in the error is
irrelevant here: it doesn't shorten a daily cap"). A client that trusts RetryInfo alone keeps
knocking all day. `SimulatorConfig.day_retry_delay` chooses between that and the alternatives.

Bare 429s carry neither QuotaFailure nor RetryInfo:
- json: Vertex AI's `{"error": {"code": 429, "message": "Resource exhausted. Please try again later.
  Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more
  details.", "status": "RESOURCE_EXHAUSTED"}}` (captured in many public logs);
- html: nginx's `limit_req` page (`ngx_http_error_429_page` + `ngx_http_error_tail` in
  src/http/ngx_http_special_response.c);
- text: Envoy's local rate limit filter, `local_rate_limited` as text/plain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import BareBody
from .google_errors import RATE_LIMIT_DOCS, SERVICE, ApiError
from .quota import Violation, format_retry_delay

# (metric suffix, quota id) by Violation.kind: the free-tier names Google reports for embedContent
_QUOTA_NAMES: dict[str, tuple[str, str]] = {
    "minute_requests": ("embed_content_free_tier_requests", "EmbedContentRequestsPerMinutePerProjectPerModel-FreeTier"),
    "minute_tokens": ("embed_content_free_tier_input_token_count", "EmbedContentInputTokensPerModelPerMinute-FreeTier"),
    "day_requests": (
        "embed_content_free_tier_requests",
        "EmbedContentRequestsPerDayPerUserPerProjectPerModel-FreeTier",
    ),
}

VERTEX_429_MESSAGE = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
NGINX_429_PAGE = (
    b"<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n"
    b"<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
ENVOY_429_TEXT = b"local_rate_limited"


@dataclass(frozen=True)
class BareReply:
    body: bytes
    content_type: str


def _message_seconds(seconds: float) -> str:
    """The 'Please retry in 34.123456789s.' figure: up to 9 decimals, trailing zeros trimmed."""
    text = f"{max(seconds, 0.0):.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def quota_exceeded(
    violations: list[Violation],
    quota_model: str,
    with_retry_info: bool,
    *,
    with_quota_value: bool = True,
    retry_delay_override: str | None = None,
) -> ApiError:
    """Google's 429 for the given exceeded limits (`quota_model` e.g. "gemini-embedding-1.0").

    The reported delay is the longest `retry_after` of the violations, or `retry_delay_override`
    verbatim (any string, to test what a client makes of "86400s", "0s", "-5s" or "soon")."""
    retry_after = max(v.retry_after for v in violations)
    lines = [
        "You exceeded your current quota, please check your plan and billing details. For more "
        f"information on this error, head to: {RATE_LIMIT_DOCS}. To monitor your current usage, "
        "head to: https://ai.dev/usage?tab=rate-limit. "
    ]
    quota_violations: list[dict[str, Any]] = []
    for violation in violations:
        suffix, quota_id = _QUOTA_NAMES[violation.kind]
        metric = f"{SERVICE}/{suffix}"
        lines.append(f"* Quota exceeded for metric: {metric}, limit: {violation.limit}, model: {quota_model}")
        entry: dict[str, Any] = {
            "quotaMetric": metric,
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": quota_model},
        }
        if with_quota_value:
            entry["quotaValue"] = str(violation.limit)
        quota_violations.append(entry)
    delay_text = retry_delay_override if retry_delay_override is not None else format_retry_delay(retry_after)
    if with_retry_info:
        shown = retry_delay_override if retry_delay_override is not None else _message_seconds(retry_after)
        lines.append(f"Please retry in {shown}.")
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}],
        },
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": quota_violations},
    ]
    if with_retry_info:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay_text})
    return ApiError(429, "\n".join(lines), details=details)


def bare_429(kind: BareBody) -> BareReply:
    """A 429 body without QuotaFailure or RetryInfo, as a proxy or Vertex AI answers."""
    if kind == "html":
        return BareReply(NGINX_429_PAGE, "text/html")
    if kind == "text":
        return BareReply(ENVOY_429_TEXT, "text/plain")
    return BareReply(ApiError(429, VERTEX_429_MESSAGE).body(), "application/json; charset=UTF-8")
