"""The embedding models the simulator serves, with the limits Google documents for each.

Sources (https://ai.google.dev/gemini-api/docs/embeddings, GA text of April 2026, and its model pages):
- gemini-embedding-001: text only, 2,048 input tokens, output 128..3072 dims (default 3072; only 3072
  is normalised, smaller sizes "you must manually normalize"), task types supported. Quota errors
  name it "gemini-embedding-1.0".
- gemini-embedding-2: multimodal, 8,192 input tokens in all, output 128..3072 dims, "auto-normalizes
  truncated dimensions"; "You cannot use the task_type field for the gemini-embedding-2 model.
  Instead, include the task as an instruction in your prompt" (`task: search result | query: ...`,
  `title: ... | text: ...`). A field test found different taskType values give identical vectors
  (github.com/embeddings-benchmark/mteb/pull/4851): the field is accepted and ignored, not refused.
  Whether the `title` field is ignored or refused is not documented; accepted and ignored here.
  Quota errors name it "gemini-embedding-2" (captured messages "limit: 1000, model:
  gemini-embedding-2"). Its vectors live in a space of their own ("Migration": re-embed from 001).

Several parts in one Content give one vector for both models: one EmbedContentRequest answers one
embedding (Google's REST example for 001 sends a three-part content; for gemini-embedding-2 the docs
call it "one aggregated embedding"). What differs is the SDK: for gemini-embedding-2 (any model for
which `t_is_multimodal_embedding_model` holds) `embed_content` passes the contents through
`t_contents`, which folds a list of strings into ONE Content with one part per string, so
`contents=[10 strings]` is one request and one vector, while 10 Contents stay 10 requests.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BATCH = 100  # requests in one batchEmbedContents call (400 beyond, for every model)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    native_dimensions: int  # the default output size
    min_dimensions: int
    max_input_tokens: int
    quota_model: str  # the model name Google reports in quota errors
    max_dimensions: int = 3072
    accepts_task_type: bool = True  # False: a request naming a task type is answered 400
    accepts_title: bool = True  # False: a request carrying a title is answered 400
    normalizes_truncated: bool = False  # True: vectors below the native size are unit length again
    multimodal: bool = False  # the SDK folds a list of strings into one multi-part Content


MODELS: dict[str, ModelSpec] = {
    "gemini-embedding-001": ModelSpec("gemini-embedding-001", 3072, 128, 2048, "gemini-embedding-1.0"),
    "gemini-embedding-2": ModelSpec(
        "gemini-embedding-2", 3072, 128, 8192, "gemini-embedding-2", normalizes_truncated=True, multimodal=True
    ),
}
