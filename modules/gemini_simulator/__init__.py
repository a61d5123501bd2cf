"""A wire-compatible simulator of Google's Gemini embedding REST API (embedContent and
batchEmbedContents), with quotas, Google's real error bodies and injectable faults, and of the Batch
API for embeddings (asyncBatchEmbedContent, batches.*) with the Files API it reads and writes.

Vectors are a pure function of the model and the text (`model_embedding`; for gemini-embedding-001
exactly `simulated_embedding(text, dims)`), so tests can check exactly what was stored. Run it
in-process (`async with GeminiSimulator(...)`), in a thread (`run_simulator_in_thread`) or as
`python -m modules.gemini_simulator` and point the SDK at it with `GOOGLE_GEMINI_BASE_URL` or
`HttpOptions(base_url=...)`.

Models (models.py): gemini-embedding-001 (2,048 tokens; 128..3072 dims, truncated vectors not
renormalised) and gemini-embedding-2 (8,192 tokens; 128..3072 dims, renormalised; task_type and
title accepted and ignored; its own vector space). One vector per Content, all its text parts
joined; note the SDK folds `contents=[str, ...]` into ONE Content for gemini-embedding-2.

Config fields (SimulatorConfig; the same names on the command line as --kebab-case and in
`POST /_sim/config` as JSON). Quotas are kept per model.
  api_key               the only key accepted (others: 400 API_KEY_INVALID); none = any key
  rpm, tpm              requests / input tokens per window (none = unlimited)
  window_seconds        length of the per-minute window (default 60)
  quota_shape           sliding (default) | fixed (windows from the start, zeroed at each
                        boundary; RetryInfo = time to it) | token_bucket (holds the limit, refills
                        limit/window a second; RetryInfo = time until the missing room refills)
  rpd                   requests per day (none = unlimited), counted like rpm
  day_seconds           length of a day (default 86400; tests compress it)
  day_quota_shape       shape of the per-day quota (default fixed, as Google resets it at midnight PT)
  day_retry_delay       RetryInfo of a per-day 429: short (Google's: seconds) | reset | none
  count_mode            call: one request per HTTP call | text: one per text in a batch
  retry_info_rate       share of 429s with RetryInfo and "Please retry in ..."
  quota_value_rate      share of 429s whose QuotaFailure violations carry quotaValue
  retry_delay_override  sent verbatim as retryDelay and in "Please retry in" (e.g. "0s", "soon")
  bare_429_rate         share of 429s without QuotaFailure or RetryInfo ...
  bare_429_body         ... as json (Vertex AI's) | text (Envoy's) | html (nginx's)
  over_limit            a text over the model's token limit: truncate | reject (400)
  poison_marker         a call with a text containing it fails whole with 400
  seed                  seed of the fault generators
  error_rate_500, error_rate_503, burst_503, drop_rate      failures instead of an answer
  slow_rate, slow_seconds                                   a late answer
  malformed_rate, count_mismatch_rate, wrong_length_rate, nan_rate   corrupted 200s
  zero_vector_rate      one vector all zeros
  overflow_rate         one vector scaled to |v| ~ 3e38 (float32 sum of squares overflows)
  underflow_rate        one vector scaled to |v| ~ 1e-30 (float32 norm is 0)
  drip_rate, drip_bytes_per_second   a 200 whose body arrives a few bytes a second
  hang_rate             a request charged and never answered, until the client leaves
  redirect_rate, redirect_location, redirect_status   a redirect to another origin (by default
                        the simulator's second listener, which records in the stats whether the
                        API key came along: redirected_calls, redirected_with_key)
  echo_key_rate         a 400 INVALID_ARGUMENT whose message quotes the caller's API key
  latency_base_ms, latency_per_text_ms   delay of every answer
  Batch API (jobs take compressed time; durations are read live, at each step of a job):
  batch_pending_seconds   how long a new job stays BATCH_STATE_PENDING (default 1)
  batch_running_seconds   then how long it stays BATCH_STATE_RUNNING before it ends (default 2)
  batch_expire_seconds    a job still pending or running this long after creation becomes
                          BATCH_STATE_EXPIRED, without results (default 172800, Google's 48 hours)
  batch_fail_rate         share of new jobs that end BATCH_STATE_FAILED (Operation error code 13)
  batch_expire_rate       share of new jobs that never finish, so they expire
  batch_item_error_rate   share of items answered {"error": {"code": 13, ...}} instead of a vector
  batch_inline_limit_bytes  largest create body (default 20971520, Google's 20 MB inline limit;
                          over it: 400 "Request payload size exceeds the limit: N bytes.")
  batch_token_count       whether each result carries "tokenCount" (default true)
  batch_lost_create_rate  share of creates whose job is created but whose answer is lost (the
                          connection closes), so a client that retries creates a second job
  batch_error_rate_503    share of Batch/Files API calls answered 503 UNAVAILABLE, with no effect
  (the draws come from their own generator seeded from `seed`; online fault sequences are unchanged)

Stats (`sim.stats`, `GET /_sim/stats`) add to the earlier keys: rate_limits_by_kind
(minute_requests / minute_tokens / day_requests), calls_by_model, texts_embedded_by_model,
title_by_text (text sha256 -> the `title` field its last clean embed carried, "" for none) and the
redirect records.

Batch API (batch_api.py lists the routes; /v1 and /v1beta alike). A create answers a long-running
Operation `{"name": "batches/<id>", "metadata": {"@type": ...EmbedContentBatch, "model",
"displayName", "createTime", "updateTime", "batchStats", "state": "BATCH_STATE_PENDING", "name"}}`;
`batches.get` answers the same Operation as the job moves on (`done`, then `response` or `error`).
Each create makes a new job (not idempotent, as Google documents). Inline results come back in input
order under `metadata.output.inlinedResponses.inlinedResponses[]` (and the Operation's `response`),
each `{"response": {"embedding": {"values"}, "tokenCount"}}` or `{"error": {"code", "message"}}`,
with the request's `metadata` if it had one; a file job (a JSONL of `{"key", "request"}` lines
uploaded with the Files API) writes `files/batch-<id>`, one `{"key", "response" | "error"}` line per
input line, downloadable with `client.files.download`. Vectors are `model_embedding(model, text,
dims)`, as online, one per request (no fusion in a batch, gemini-embedding-2 included). The API key
is checked as online. Jobs and files live in memory as long as the simulator (a client that dies and
comes back finds its job by name) until deleted or `reset()`, which forgets them too.

Batch stats: batch_jobs_created, batch_jobs_by_display_name (double submissions show as counts > 1),
batch_items_per_job, batch_jobs_by_state (current state of the stored jobs), batch_jobs_deleted,
batch_texts_embedded, batch_items_failed, batch_embeds_per_text, batch_texts_embedded_by_model,
batch_tokens, files_uploaded, file_bytes_uploaded, files_downloaded, and tokens_by_path
({"online", "batch"}, for cost checks: batch tokens are billed at half price). Batch embeds are
counted apart: `embeds_per_text`, `texts_embedded` and `tokens_counted` stay online-only, the batch_*
twins count the items of a job when it succeeds (billed then, whether or not anyone fetches the
results); a text embedded both ways shows in both.
"""

from .config import SimulatorConfig
from .google_errors import ApiError
from .models import MAX_BATCH, MODELS, ModelSpec
from .quota import format_retry_delay
from .server import GeminiSimulator, run_simulator_in_thread
from .stats import SimulatorStats
from .tokens import count_tokens, truncate_to_tokens
from .vectors import NATIVE_DIMENSIONS, model_embedding, simulated_embedding, text_sha256

__all__ = [
    "MAX_BATCH",
    "MODELS",
    "NATIVE_DIMENSIONS",
    "ApiError",
    "GeminiSimulator",
    "ModelSpec",
    "SimulatorConfig",
    "SimulatorStats",
    "count_tokens",
    "format_retry_delay",
    "model_embedding",
    "run_simulator_in_thread",
    "simulated_embedding",
    "text_sha256",
    "truncate_to_tokens",
]
