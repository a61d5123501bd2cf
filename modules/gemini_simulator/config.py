"""`SimulatorConfig`: quotas, faults and latency, all changeable while the simulator runs.

Each field carries its CLI help and a parser (`metadata`), so the command line (`__main__`) and
the runtime patch endpoint (`POST /_sim/config`) accept exactly the same fields and values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

CountMode = Literal["call", "text"]
OverLimit = Literal["truncate", "reject"]
QuotaShape = Literal["sliding", "fixed", "token_bucket"]
DayRetryDelay = Literal["short", "reset", "none"]
BareBody = Literal["json", "text", "html"]
Parser = Callable[[object], Any]

_NONE_WORDS = frozenset({"none", "null", "unlimited", "off", ""})


def _is_none(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)


def _as_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"expected an integer, got {value!r}")


def _as_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"expected a number, got {value!r}")


def _limit(value: object) -> int | None:
    """A positive quota, or None (also 'none'/'unlimited') for no limit."""
    if _is_none(value):
        return None
    number = _as_int(value)
    if number < 1:
        raise ValueError(f"a limit must be >= 1 (or none for unlimited), got {number}")
    return number


def _rate(value: object) -> float:
    number = _as_float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"a rate must be within 0..1, got {number}")
    return number


def _non_negative(value: object) -> float:
    number = _as_float(value)
    if not number >= 0.0:  # also rejects NaN
        raise ValueError(f"expected a number >= 0, got {number}")
    return number


def _positive(value: object) -> float:
    number = _as_float(value)
    if not number > 0.0:
        raise ValueError(f"expected a number > 0, got {number}")
    return number


def _count(value: object) -> int:
    number = _as_int(value)
    if number < 0:
        raise ValueError(f"expected an integer >= 0, got {number}")
    return number


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value or None


def _choice(*choices: str) -> Parser:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _byte_limit(value: object) -> int:
    number = _as_int(value)
    if number < 1:
        raise ValueError(f"expected a number of bytes >= 1, got {number}")
    return number


def _redirect_status(value: object) -> int:
    number = _as_int(value)
    if number not in (301, 302, 303, 307, 308):
        raise ValueError(f"expected one of 301, 302, 303, 307, 308, got {number}")
    return number


def _spec(parser: Parser, help_text: str, metavar: str) -> dict[str, Any]:
    return {"parse": parser, "help": help_text, "metavar": metavar}


@dataclass
class SimulatorConfig:
    """Everything the simulator does besides the wire format. Mutable at runtime: the server reads
    the fields on every call (`sim.config.rpm = 10` takes effect on the next request)."""

    # --- authentication
    api_key: str | None = field(
        default=None,
        metadata=_spec(
            _optional_text,
            "the only API key accepted (others get Google's 400 API_KEY_INVALID); none = any non-empty key",
            "KEY",
        ),
    )
    # --- quotas (per model, like Google's "PerProjectPerModel" quotas)
    rpm: int | None = field(
        default=None,
        metadata=_spec(_limit, "requests allowed per window (none = unlimited); see --count-mode", "N"),
    )
    tpm: int | None = field(
        default=None,
        metadata=_spec(_limit, "input tokens allowed per window (none = unlimited)", "N"),
    )
    window_seconds: float = field(
        default=60.0,
        metadata=_spec(_positive, "length of the per-minute quota window in seconds (tests compress it)", "S"),
    )
    quota_shape: QuotaShape = field(
        default="sliding",
        metadata=_spec(
            _choice("sliding", "fixed", "token_bucket"),
            "shape of the per-minute quotas: 'sliding' log, 'fixed' windows from the start (counters zeroed "
            "at each boundary), or 'token_bucket' (holds the limit, refills limit/window per second)",
            "SHAPE",
        ),
    )
    rpd: int | None = field(
        default=None,
        metadata=_spec(_limit, "requests allowed per day (none = unlimited), counted as --count-mode says", "N"),
    )
    day_seconds: float = field(
        default=86400.0,
        metadata=_spec(_positive, "length of the per-day quota window in seconds (tests compress it)", "S"),
    )
    day_quota_shape: QuotaShape = field(
        default="fixed",
        metadata=_spec(
            _choice("sliding", "fixed", "token_bucket"),
            "shape of the per-day quota (Google resets it at a fixed time: 'fixed')",
            "SHAPE",
        ),
    )
    day_retry_delay: DayRetryDelay = field(
        default="short",
        metadata=_spec(
            _choice("short", "reset", "none"),
            "RetryInfo of a per-day 429: 'short' = seconds, as Google sends, 'reset' = the true wait until "
            "the day has room, 'none' = no RetryInfo",
            "MODE",
        ),
    )
    count_mode: CountMode = field(
        default="call",
        metadata=_spec(
            _choice("call", "text"),
            "what one 'request' is for --rpm and --rpd: 'call' = one HTTP call, 'text' = each text in a batch",
            "MODE",
        ),
    )
    # --- what a 429 says
    retry_info_rate: float = field(
        default=1.0,
        metadata=_spec(_rate, "share of 429s that carry RetryInfo and 'Please retry in ...' (0..1)", "P"),
    )
    quota_value_rate: float = field(
        default=1.0,
        metadata=_spec(_rate, "share of 429s whose QuotaFailure violations carry quotaValue (the limit)", "P"),
    )
    retry_delay_override: str | None = field(
        default=None,
        metadata=_spec(
            _optional_text,
            "send this verbatim as RetryInfo.retryDelay and in 'Please retry in' instead of the true wait "
            "(e.g. 86400s, 0s, -5s, soon)",
            "TEXT",
        ),
    )
    bare_429_rate: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of 429s answered bare, like a proxy or Vertex AI: no QuotaFailure/RetryInfo", "P"),
    )
    bare_429_body: BareBody = field(
        default="json",
        metadata=_spec(
            _choice("json", "text", "html"),
            "body of a bare 429: Vertex AI's minimal 'json', Envoy's plain 'text', or nginx's 'html' page",
            "KIND",
        ),
    )
    # --- input limits
    over_limit: OverLimit = field(
        default="truncate",
        metadata=_spec(
            _choice("truncate", "reject"),
            "a text over the model's 2,048-token input limit: 'truncate' silently, or 'reject' with 400",
            "MODE",
        ),
    )
    poison_marker: str | None = field(
        default=None,
        metadata=_spec(_optional_text, "any call containing a text with this substring fails whole with 400", "TEXT"),
    )
    # --- faults: each a probability per embedding call, drawn from a generator seeded with --seed
    seed: int = field(default=0, metadata=_spec(_as_int, "seed of the fault generator", "N"))
    error_rate_500: float = field(default=0.0, metadata=_spec(_rate, "share of calls answered 500 INTERNAL", "P"))
    error_rate_503: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls answered 503 UNAVAILABLE (model overloaded)", "P")
    )
    burst_503: int = field(
        default=0, metadata=_spec(_count, "the next N embedding calls get 503 (counts down as used)", "N")
    )
    drop_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls whose TCP connection is closed unanswered", "P")
    )
    slow_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls answered only after --slow-seconds", "P")
    )
    slow_seconds: float = field(default=30.0, metadata=_spec(_non_negative, "delay of a slow answer, in seconds", "S"))
    malformed_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls answered 200 with truncated, invalid JSON", "P")
    )
    count_mismatch_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls answered with one vector too few or too many", "P")
    )
    wrong_length_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls where one vector has the wrong length", "P")
    )
    nan_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls where one vector holds a bare NaN token", "P")
    )
    # --- hostile upstream answers: probabilities per embedding call, from a second generator seeded
    # with --seed, so they leave the sequence of the faults above unchanged
    zero_vector_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls where one vector is all zeros", "P")
    )
    overflow_rate: float = field(
        default=0.0,
        metadata=_spec(
            _rate, "share of calls where one vector is scaled to |v| ~ 3e38 (its float32 norm overflows)", "P"
        ),
    )
    underflow_rate: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of calls where one vector is scaled to |v| ~ 1e-30 (its float32 norm is 0)", "P"),
    )
    drip_rate: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of calls answered 200 a few bytes at a time (see --drip-bytes-per-second)", "P"),
    )
    drip_bytes_per_second: float = field(
        default=8.0, metadata=_spec(_positive, "pace of a dripped answer, in bytes per second", "B")
    )
    hang_rate: float = field(
        default=0.0, metadata=_spec(_rate, "share of calls never answered, until the client goes away", "P")
    )
    redirect_rate: float = field(
        default=0.0,
        metadata=_spec(
            _rate, "share of calls answered with a redirect to another origin (see --redirect-location)", "P"
        ),
    )
    redirect_location: str | None = field(
        default=None,
        metadata=_spec(
            _optional_text,
            "origin a redirect points at (its path is /redirected/<original path>); none = the simulator's own "
            "second listener, which records what arrives",
            "URL",
        ),
    )
    redirect_status: int = field(
        default=307, metadata=_spec(_redirect_status, "status of a redirect: 301, 302, 303, 307 or 308", "CODE")
    )
    echo_key_rate: float = field(
        default=0.0,
        metadata=_spec(
            _rate, "share of calls answered 400 INVALID_ARGUMENT with the caller's API key in the message", "P"
        ),
    )
    # --- latency
    latency_base_ms: float = field(
        default=0.0, metadata=_spec(_non_negative, "delay before every embedding answer, in ms", "MS")
    )
    latency_per_text_ms: float = field(
        default=0.0, metadata=_spec(_non_negative, "extra delay per text in the call, in ms", "MS")
    )

    # --- Batch API (asyncBatchEmbedContent, batches/*, files/*): compressed time and outcomes
    batch_pending_seconds: float = field(
        default=1.0,
        metadata=_spec(_non_negative, "how long a new batch job stays BATCH_STATE_PENDING, in seconds", "S"),
    )
    batch_running_seconds: float = field(
        default=2.0,
        metadata=_spec(
            _non_negative, "how long a batch job then stays BATCH_STATE_RUNNING before it ends, in seconds", "S"
        ),
    )
    batch_expire_seconds: float = field(
        default=172800.0,
        metadata=_spec(
            _positive,
            "a batch job still pending or running this long after its creation becomes BATCH_STATE_EXPIRED, "
            "without results (Google: 48 hours)",
            "S",
        ),
    )
    batch_fail_rate: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of new batch jobs that end BATCH_STATE_FAILED (a whole-job error)", "P"),
    )
    batch_expire_rate: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of new batch jobs that never finish and expire after --batch-expire-seconds", "P"),
    )
    batch_item_error_rate: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of items in a batch job answered with an error instead of an embedding", "P"),
    )
    batch_inline_limit_bytes: int = field(
        default=20 * 1024 * 1024,
        metadata=_spec(_byte_limit, "largest asyncBatchEmbedContent request body accepted (Google: 20 MB inline)", "B"),
    )
    batch_token_count: bool = field(
        default=True,
        metadata=_spec(_as_bool, "whether each batch result carries its tokenCount (true/false)", "BOOL"),
    )
    batch_lost_create_rate: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of batch creations that create the job but close the connection unanswered", "P"),
    )
    batch_error_rate_503: float = field(
        default=0.0,
        metadata=_spec(_rate, "share of Batch and Files API calls answered 503 UNAVAILABLE, with no effect", "P"),
    )

    def update(self, patch: Mapping[str, object]) -> dict[str, Any]:
        """Validate and apply a patch (field name -> value; strings are parsed as on the command
        line). All-or-nothing: raises ValueError and changes nothing if any entry is invalid."""
        known = {f.name: f for f in dataclasses.fields(self)}
        parsed: dict[str, Any] = {}
        for name, value in patch.items():
            spec = known.get(name)
            if spec is None:
                raise ValueError(f"unknown config field {name!r}; known: {', '.join(sorted(known))}")
            try:
                parsed[name] = spec.metadata["parse"](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        for name, value in parsed.items():
            setattr(self, name, value)
        return parsed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The fields of SimulatorConfig, in declaration order (for the CLI)."""
    return dataclasses.fields(SimulatorConfig)
