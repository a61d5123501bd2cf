"""The Embedder port: turn a list of texts into vectors, and estimate tokens without an API call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from modules.errors import TransientEmbeddingError

if TYPE_CHECKING:
    from modules.embedders.batch_base import BatchEmbedder

Vectors = npt.NDArray[np.float32]  # shape (n_texts, dimensions), rows L2-normalized
MIN_NORM, MAX_NORM = 1e-6, 1e6  # a real embedding's norm is about 1 (0.3..40 before normalizing)


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

    @property
    def input_format(self) -> str:
        """How a document's text is put to the model, as a template of {title} and {text} ("{text}":
        as it is). Part of the cache key: another format gives other vectors."""
        ...

    def framing_tokens(self, title: str | None) -> int:
        """Estimated tokens the format adds around a document's text (0 when it goes as it is)."""
        ...

    async def embed(self, requests: Sequence[EmbedRequest], on_sent: Callable[[], None] | None = None) -> Vectors:
        """Embed every request in one API call, each with its own title; vectors in input order.
        `on_sent` is called when the request has left (as near as the adapter can tell; not at all if
        it can't tell), so that the pacer counts the call from then: building a request of 100 texts
        takes the SDK tens of milliseconds."""
        ...

    async def embed_query(self, text: str) -> Vectors:
        """Embed a search query (task type RETRIEVAL_QUERY where the provider has task types): shape (1, d)."""
        ...

    def estimate_tokens(self, text: str) -> int: ...

    def calls_made(self) -> int:
        """Real API calls made so far (for the run stats)."""
        ...

    def batch_client(self) -> BatchEmbedder | None:
        """The provider's Batch API on the same model and settings (half price, hours), or None."""
        ...

    async def aclose(self) -> None: ...


def l2_normalize(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalized: Vectors = (vectors / norms).astype(np.float32, copy=False)
    return normalized


def checked_vectors(raw: npt.NDArray[np.floating[Any]]) -> Vectors:
    """Unit vectors from an answer, or TransientEmbeddingError (not an outage) if any row is degenerate:
    NaN or infinite values, or a norm that is zero, overflows or underflows (outside 1e-6..1e6). Such a
    vector has no usable direction; stored, it would match nothing, or everything."""
    if not np.isfinite(raw).all():
        raise TransientEmbeddingError("answer held NaN or infinite values", outage=False)
    norms = np.linalg.norm(raw, axis=1)
    bad = np.flatnonzero(~((norms >= MIN_NORM) & (norms <= MAX_NORM)))
    if bad.size:
        norm = float(norms[bad[0]])
        why = "zero" if norm == 0 else f"{norm:.3g}, outside {MIN_NORM:g}..{MAX_NORM:g}"
        raise TransientEmbeddingError(f"degenerate vector in the answer (norm {why})", outage=False)
    unit: Vectors = (raw / norms[:, None]).astype(np.float32)
    return unit
