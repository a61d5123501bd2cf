"""Simulated embeddings: a pure function of the text, shaped like Gemini's Matryoshka vectors."""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

NATIVE_DIMENSIONS = 3072


def text_sha256(text: str) -> str:
    """Hex SHA-256 of the text's UTF-8 bytes (the key of `SimulatorStats.embeds_per_text`)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def simulated_embedding(text: str, dimensions: int = NATIVE_DIMENSIONS) -> npt.NDArray[np.float32]:
    """The vector the simulator returns for `text` at `dimensions` (float32, shape `(dimensions,)`).

    numpy's `default_rng` is seeded with SHA-256 of the UTF-8 text (as a big-endian integer), a
    3072-dim standard normal vector is drawn and L2-normalised, then cut to `dimensions` WITHOUT
    renormalising: like Google's Matryoshka truncation, a vector below 3072 dims is not unit length.
    """
    if not 1 <= dimensions <= NATIVE_DIMENSIONS:
        raise ValueError(f"dimensions must be within 1..{NATIVE_DIMENSIONS}, got {dimensions}")
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest(), "big")
    full = np.random.default_rng(seed).standard_normal(NATIVE_DIMENSIONS)
    full /= np.linalg.norm(full)
    return full[:dimensions].astype(np.float32)
