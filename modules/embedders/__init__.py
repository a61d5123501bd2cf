"""Embedding providers behind one interface (`Embedder`)."""

from __future__ import annotations

from modules.embedders.base import Embedder, EmbedRequest, Vectors
from modules.settings import Settings


def make_embedder(settings: Settings) -> Embedder:
    if settings.provider == "gemini":
        from modules.embedders.gemini import GeminiEmbedder

        return GeminiEmbedder(settings)
    from modules.embedders.local import LocalEmbedder

    return LocalEmbedder(settings.dimensions)


__all__ = ["EmbedRequest", "Embedder", "Vectors", "make_embedder"]
