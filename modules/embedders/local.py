"""Offline embedder: WordLlama, whose weights ship inside its wheel.

Loaded straight from the package's own folder (WordLlama.load() would look for the tokenizer in the
wrong folder and then try the network). Its native vectors have 256 dimensions; to fit the vector
column they are zero-padded (cosine similarity and unit length are unchanged by zero padding) or,
for a column narrower than 256, truncated Matryoshka-style and renormalized.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from modules.embedders.base import EmbedRequest, Vectors, checked_vectors, l2_normalize
from modules.errors import ProviderConfigError
from modules.text import estimate_tokens

NATIVE_DIMENSIONS = 256
_CONFIG = "l2_supercat"
_lock = threading.Lock()


def local_model_id(dimensions: int) -> str:
    """The model id the offline model's vectors are recorded under."""
    return f"wordllama-{_CONFIG}-{NATIVE_DIMENSIONS}@{dimensions}"


@cache
def _load_model() -> Any:
    try:
        import wordllama
        from safetensors import safe_open
        from wordllama import WordLlama
        from wordllama.inference import WordLlamaInference
    except ImportError as exc:
        raise ProviderConfigError(f"the local provider needs the 'wordllama' package: {exc}") from None
    root = Path(wordllama.__file__).parent
    weights = root / "weights" / f"{_CONFIG}_{NATIVE_DIMENSIONS}.safetensors"
    tokenizer_file = root / "tokenizers" / f"{_CONFIG}_tokenizer_config.json"
    if not weights.exists() or not tokenizer_file.exists():
        raise ProviderConfigError(f"WordLlama's bundled files are missing under {root}; reinstall 'wordllama'")
    tokenizer = WordLlama.load_tokenizer(tokenizer_file)
    with safe_open(str(weights), framework="np", device="cpu") as handle:
        table = handle.get_tensor("embedding.weight")
    return WordLlamaInference(table, tokenizer, binary=False)


class LocalEmbedder:
    def __init__(self, dimensions: int) -> None:
        self._dimensions = dimensions
        self._calls = 0
        self._model = _load_model()

    @property
    def model_id(self) -> str:
        return local_model_id(self._dimensions)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch(self) -> int:
        return 100

    @property
    def input_format(self) -> str:
        return "{text}"

    def framing_tokens(self, title: str | None) -> int:
        return 0

    def estimate_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def calls_made(self) -> int:
        return self._calls

    async def embed(self, requests: Sequence[EmbedRequest], on_sent: Callable[[], None] | None = None) -> Vectors:
        self._calls += 1
        if on_sent is not None:
            on_sent()
        texts = [r.text for r in requests]
        return await asyncio.to_thread(self.embed_now, texts)

    async def embed_query(self, text: str) -> Vectors:
        return await asyncio.to_thread(self.embed_now, [text])

    def embed_now(self, texts: list[str]) -> Vectors:
        """Synchronous embedding, e.g. for a search query."""
        if not texts:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        with _lock:  # the tokenizer is not documented as thread-safe
            native = np.asarray(self._model.embed(texts, norm=False), dtype=np.float64)
        # A text with no known token gives a zero vector: refused (recorded failed), never stored.
        return fit_dimensions(checked_vectors(native), self._dimensions)

    def batch_client(self) -> None:
        return None  # offline: no Batch API

    async def aclose(self) -> None:
        return None


def fit_dimensions(native: Vectors, dimensions: int) -> Vectors:
    if dimensions == native.shape[1]:
        return native
    if dimensions < native.shape[1]:
        return l2_normalize(np.ascontiguousarray(native[:, :dimensions]))
    padded = np.zeros((native.shape[0], dimensions), dtype=np.float32)
    padded[:, : native.shape[1]] = native
    return padded
