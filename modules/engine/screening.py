"""What a claimed chunk becomes before it is sent: refused (no text, or too long under the `fail`
policy), truncated to the model's input limit, and keyed for the embedding cache.

The input limit holds for what the model is sent: the chunk's text plus the framing the embedder puts
around it (gemini-embedding-2's `title: ... | text: ...`), so a text is cut to the limit less that."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modules.logs import get_logger
from modules.stores.base import Chunk, Failure
from modules.text import content_hash, normalize_text, truncate_to_tokens

log = get_logger(__name__)


@dataclass(frozen=True)
class Item:
    """A claimed chunk ready to send: its text (maybe truncated), the tokens the model is sent for it
    (estimated, framing included) and its cache key (None when the cache is off)."""

    chunk: Chunk
    text: str
    tokens: int
    cache_key: str | None = None

    @property
    def content_hash(self) -> str:
        """The hash of the stored text: the write is skipped if the chunk was edited meanwhile."""
        return content_hash(self.chunk.content)


@dataclass(frozen=True)
class Screener:
    model_id: str
    task_type: str
    use_title: bool
    cache: bool
    max_input_tokens: int
    overlong: str  # "truncate" or "fail"
    estimate_tokens: Callable[[str], int]
    framing_tokens: Callable[[str | None], int] = lambda title: 0  # what the embedder adds around a text
    input_format: str = "{text}"  # the embedder's framing, as a template (part of the cache key)

    def screen(self, chunks: Sequence[Chunk]) -> tuple[list[Item], list[Failure]]:
        """Split claimed chunks into ones to send and ones that must never be sent (bad input)."""
        ready: list[Item] = []
        rejected: list[Failure] = []
        limit = self.max_input_tokens
        for chunk in chunks:
            text = chunk.content
            if not text.strip():
                rejected.append(Failure(chunk.id, "empty content: the chunk has no text to embed"))
                continue
            framing = self.framing_tokens(chunk.title if self.use_title else None)
            tokens = self.estimate_tokens(text) + framing
            if tokens > limit:
                if self.overlong == "fail":
                    rejected.append(Failure(chunk.id, f"text too long: about {tokens} tokens, the model takes {limit}"))
                    continue
                text = truncate_to_tokens(text, max(1, limit - framing), self.estimate_tokens)
                log.warning("✂️ チャンク %s は約%dトークンのため%dトークンに切り詰めます", chunk.id, tokens, limit)
                tokens = self.estimate_tokens(text) + framing
            ready.append(Item(chunk, text, tokens, self.cache_key(chunk, text)))
        return ready, rejected

    def cache_key(self, chunk: Chunk, text: str) -> str | None:
        """Identical text (normalized) under the same model, dimension, task type, title and framing
        shares one vector. None when the cache is off. (The framing joins the key only when there is
        one, so keys made before it existed stay valid.)"""
        if not self.cache:
            return None
        title = (chunk.title or "") if self.use_title else ""
        parts: tuple[str, ...] = (self.model_id, self.task_type, title, normalize_text(text))
        if self.input_format != "{text}":
            parts += (self.input_format,)
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
