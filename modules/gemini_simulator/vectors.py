"""Simulated embeddings: a pure function of (model, text, dimensions), shaped like Gemini's
Matryoshka vectors.

What a vector depends on, and why: the model (each model has its own vector space, as Google's do:
gemini-embedding-2 vectors cannot be compared with 001's), the text (all text parts of the content,
joined) and the output size. Not the task type or title: gemini-embedding-2 ignores them (identical
vectors for different task types, github.com/embeddings-benchmark/mteb/pull/4851), and for 001 the
simulator has always left them out so that tests can predict a stored vector from its text alone.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from .models import MODELS

NATIVE_DIMENSIONS = 3072
_BASE_MODEL = "gemini-embedding-001"


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


def model_embedding(model: str, text: str, dimensions: int = NATIVE_DIMENSIONS) -> npt.NDArray[np.float32]:
    """The vector `model` answers for `text` at `dimensions` (float32, shape `(dimensions,)`).

    gemini-embedding-001: exactly `simulated_embedding(text, dimensions)`. Any other model: numpy's
    `default_rng` seeded with SHA-256 of "<model>\\n<text>" (UTF-8), a 3072-dim standard normal
    vector, L2-normalised and cut to `dimensions`, then normalised again when the model
    auto-normalises truncated vectors (gemini-embedding-2 does)."""
    if model == _BASE_MODEL:
        return simulated_embedding(text, dimensions)
    if not 1 <= dimensions <= NATIVE_DIMENSIONS:
        raise ValueError(f"dimensions must be within 1..{NATIVE_DIMENSIONS}, got {dimensions}")
    spec = MODELS.get(model)
    seed = int.from_bytes(hashlib.sha256(f"{model}\n{text}".encode("utf-8", "surrogatepass")).digest(), "big")
    full = np.random.default_rng(seed).standard_normal(NATIVE_DIMENSIONS)
    full /= np.linalg.norm(full)
    cut = full[:dimensions]
    if spec is not None and spec.normalizes_truncated:
        cut = cut / np.linalg.norm(cut)
    return cut.astype(np.float32)
