"""The Gemini embedding models, in one table: what Google documents for each, and how a text is put
to the model (the task and the title as API fields, or written into the text).

Sources, read 2026-11-30:
- https://ai.google.dev/gemini-api/docs/embeddings (GA text, "Latest update April 2026"): input token
  limits (8,192 for gemini-embedding-2, 2,048 for gemini-embedding-001); output dimensions 128..3072,
  768 / 1536 / 3072 recommended; gemini-embedding-001 takes `task_type` (and a `title` with
  RETRIEVAL_DOCUMENT); "You cannot use the task_type field for the gemini-embedding-2 model. Instead,
  include the task as an instruction in your prompt": documents `title: {title} | text: {content}`
  ("If there is no title, use `title: none`"), queries `task: search result | query: {content}`
  (question answering, fact checking, code retrieval alike), symmetric tasks `task: classification |
  query: ...`, `task: clustering | ...`, `task: sentence similarity | ...`; the Batch API costs "50%
  of the default Embedding price".
- https://ai.google.dev/gemini-api/docs/pricing, as transcribed on 2026-09-20 (api-evangelist/gemini,
  plans/gemini-plans-pricing.yml): "Gemini Embedding 2 text input $0.20" per 1M tokens, and embeddings
  for File search "$0.15 / 1M tokens", the price of gemini-embedding-001 since its GA announcement
  (developers.googleblog.com, "Gemini Embedding now generally available": "$0.15 per 1M input tokens").

A model not in the table (a new or retired name) gets no dimension check, no price, the 2,048-token
limit and the task as an API field; names that start with "gemini-embedding-2" (its preview and
dated versions) behave as gemini-embedding-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Placement = Literal["field", "text"]  # an API field of the request, or written into the text
DEFAULT_INPUT_TOKENS = 2048  # for a model the table does not know

# gemini-embedding-2's task instructions, by the task types gemini-embedding-001 takes as a field
_QUERY_TASKS = {
    "RETRIEVAL_QUERY": "search result",
    "QUESTION_ANSWERING": "question answering",
    "FACT_VERIFICATION": "fact checking",
    "CODE_RETRIEVAL_QUERY": "code retrieval",
    "CLASSIFICATION": "classification",
    "CLUSTERING": "clustering",
    "SEMANTIC_SIMILARITY": "sentence similarity",
}
DOCUMENT_FORMAT = "title: {title} | text: {text}"
QUERY_FORMAT = "task: {task} | query: {text}"


@dataclass(frozen=True)
class EmbeddingModel:
    name: str
    max_input_tokens: int
    task: Placement  # how the task type reaches the model
    title: Placement  # how a document's title reaches the model (field: only with RETRIEVAL_DOCUMENT)
    usd_per_million_tokens: float | None  # online (embedContent / batchEmbedContents); None: unknown
    usd_per_million_tokens_batch: float | None  # the Batch API (asyncBatchEmbedContent)
    min_dimensions: int | None = 128  # None: not checked (a model the table does not know)
    max_dimensions: int | None = 3072
    recommended_dimensions: tuple[int, ...] = (768, 1536, 3072)
    normalizes_truncated: bool = False  # vectors below 3072 dimensions come back unit length

    def input_format(self, task_type: str) -> str:
        """The text the model sees, as a template of {title} and {text} (for the cache key: a change
        here changes every vector)."""
        if self.task == "field":
            return "{text}"
        if task_type == "RETRIEVAL_DOCUMENT":
            return DOCUMENT_FORMAT
        return QUERY_FORMAT.replace("{task}", _QUERY_TASKS.get(task_type, "search result"))

    def input_text(self, text: str, task_type: str, title: str | None) -> str:
        """What is sent as the content's text: the text itself, or the prompt Google documents."""
        return self.input_format(task_type).format(title=title or "none", text=text)

    def title_field(self, task_type: str, title: str | None) -> str | None:
        """The request's `title` field, where the model takes one (with RETRIEVAL_DOCUMENT only)."""
        if self.title == "field" and task_type == "RETRIEVAL_DOCUMENT" and title:
            return title
        return None

    @property
    def documented(self) -> bool:
        return self.name in MODELS

    def allows_dimensions(self, dimensions: int) -> bool:
        low, high = self.min_dimensions, self.max_dimensions
        return (low is None or dimensions >= low) and (high is None or dimensions <= high)

    def cost_usd(self, tokens: int, *, batch: bool = False) -> float | None:
        """What `tokens` input tokens cost at Google's list price (None when the price is unknown)."""
        price = self.usd_per_million_tokens_batch if batch else self.usd_per_million_tokens
        return None if price is None else round(tokens * price / 1_000_000, 6)


MODELS: dict[str, EmbeddingModel] = {
    "gemini-embedding-001": EmbeddingModel(
        "gemini-embedding-001",
        max_input_tokens=2048,
        task="field",
        title="field",
        usd_per_million_tokens=0.15,
        usd_per_million_tokens_batch=0.075,
    ),
    "gemini-embedding-2": EmbeddingModel(
        "gemini-embedding-2",
        max_input_tokens=8192,
        task="text",
        title="text",
        usd_per_million_tokens=0.20,
        usd_per_million_tokens_batch=0.10,
        normalizes_truncated=True,
    ),
}


def model_info(name: str) -> EmbeddingModel:
    """The table's row for a model name (with or without "models/"); for a model the table does not
    know, a row with the defaults above (`documented` is then False)."""
    name = name.removeprefix("models/")
    if name in MODELS:
        return MODELS[name]
    if name.startswith("gemini-embedding-2"):
        return MODELS["gemini-embedding-2"]
    return EmbeddingModel(name, DEFAULT_INPUT_TOKENS, "field", "field", None, None, None, None, ())
