"""The Embedder port: turn a list of texts into vectors, and estimate tokens without an API call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]  # shape (n_texts, dimensions), rows L2-normalized


@dataclass(frozen=True)
class EmbedRequest:
    """One text to embed, with the title of the document it belongs to (when known)."""

    text: str
    title: str | None = None


class Embedder(Protocol):
    """Implemented by adapters (Gemini, local). Raises only the errors in `modules.errors`."""

    @property
    def model_id(self) -> str:
        """What is written to the chunk's model column: names the model and its dimension."""
        ...

    @property
    def dimensions(self) -> int: ...

    @property
    def max_batch(self) -> int:
        """The most texts one call may carry."""
        ...

    async def embed(self, requests: Sequence[EmbedRequest]) -> Vectors:
        """Embed every request in one API call (or as few as the API allows), vectors in input order."""
        ...

    async def embed_query(self, text: str) -> Vectors:
        """Embed a search query (task type RETRIEVAL_QUERY where the provider has task types): shape (1, d)."""
        ...

    def estimate_tokens(self, text: str) -> int: ...

    def calls_made(self) -> int:
        """Real API calls made so far (for the run stats)."""
        ...

    async def aclose(self) -> None: ...


def l2_normalize(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalized: Vectors = (vectors / norms).astype(np.float32, copy=False)
    return normalized
