"""What a corrupted 200 looks like: a vector too many or too few, too short, holding NaN, all zeros,
too large or too small to square in float32, or a body cut short.

The last three are numerically hostile rather than malformed: every value is a valid JSON number and
a valid float32, so a client that only checks the shape stores them. An all-zero vector has no
direction (cosine similarity divides by zero). An overflowing vector keeps the true direction but
is scaled so its largest value is 3e38 (float32's maximum is 3.4028235e38): its squares overflow
float32, so a norm computed in float32 is inf and the normalised vector zeros or NaN; in float64 the
norm is fine. An underflowing vector is scaled so its largest value is 1e-30: its squares are below
float32's smallest subnormal (1.4e-45), so a float32 norm is 0 and normalising divides by zero.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .faults import Fault

OVERFLOW_MAGNITUDE = 3e38
UNDERFLOW_MAGNITUDE = 1e-30


def _rescaled(vector: npt.NDArray[np.float32], magnitude: float) -> npt.NDArray[np.float32]:
    """The vector scaled (in float64) so its largest |value| is `magnitude`: same direction."""
    wide = vector.astype(np.float64)
    peak = float(np.abs(wide).max()) if wide.size else 0.0
    if peak == 0.0:
        return np.full(vector.shape, magnitude, dtype=np.float32)
    return (wide * (magnitude / peak)).astype(np.float32)


def corrupt_vectors(fault: Fault, vectors: list[npt.NDArray[np.float32]], pick: float) -> list[npt.NDArray[np.float32]]:
    """Apply a vector-level corruption to a copy of the list: count_mismatch, wrong_length or nan,
    or zero_vector, overflow or underflow (each hits the one vector that `pick` chooses)."""
    out = list(vectors)
    if not out:
        return out
    index = min(int(pick * len(out)), len(out) - 1)
    if fault is Fault.COUNT_MISMATCH:
        # one too many when the pick is in the upper half (or for a single text), else one too few
        if pick >= 0.5 or len(out) == 1:
            out.append(out[index].copy())
        else:
            del out[index]
    elif fault is Fault.WRONG_LENGTH:
        vector = out[index]
        out[index] = vector[: max(len(vector) // 2, 1)] if len(vector) > 1 else np.zeros(2, dtype=np.float32)
    elif fault is Fault.NAN:
        vector = out[index].copy()
        vector[min(int(pick * 997) % max(len(vector), 1), len(vector) - 1)] = np.nan
        out[index] = vector
    elif fault is Fault.ZERO_VECTOR:
        out[index] = np.zeros_like(out[index])
    elif fault is Fault.OVERFLOW:
        out[index] = _rescaled(out[index], OVERFLOW_MAGNITUDE)
    elif fault is Fault.UNDERFLOW:
        out[index] = _rescaled(out[index], UNDERFLOW_MAGNITUDE)
    return out


def truncate_body(body: bytes, pick: float) -> bytes:
    """A 200 body cut somewhere in its middle (never valid JSON)."""
    if len(body) < 4:
        return b"{"
    cut = 1 + int((0.25 + 0.5 * pick) * (len(body) - 2))
    return body[:cut]
