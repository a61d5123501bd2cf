"""Fast JSON encoding of float32 vectors.

`json.dumps` on 768 floats costs ~0.5 ms (float64 repr), which alone would cap the simulator near
2,000 texts/s. Here all numbers of a response are formatted at once with numpy as fixed-width
scientific notation with 9 significant digits (enough to round-trip any float32 exactly), padded
with a leading space instead of a '+' sign, which JSON allows as whitespace.

The fast path takes finite values with 1e-99 <= |v| < 1e99 (or 0). Every finite float32 is inside
that range (the largest is 3.4028235e38, the smallest subnormal 1.4e-45), so the hostile vectors
(overflow ~3e38, underflow ~1e-30) are valid, exact JSON numbers too; only NaN and infinity take the
slow path, which writes the bare tokens a broken server would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# Each number is a 16-byte record " d.dddddddde-XX," (sign-or-space, 9 significant digits, exponent,
# comma), assembled as four native uint32 words gathered from small lookup tables:
#   word 0: sign, first digit, '.', second digit     (200 entries: sign x 2 leading digits)
#   word 1: digits 3-6                                (10,000 entries)
#   word 2: digits 7-9, 'e'                           (1,000 entries)
#   word 3: exponent sign, 2 exponent digits, ','     (199 entries: -99..+99)
_WIDTH = 16


def _table(strings: list[str]) -> npt.NDArray[np.uint32]:
    return np.frombuffer("".join(strings).encode("ascii"), dtype=np.uint32).copy()


_WORD0 = _table([f"{sign}{i // 10}.{i % 10}" for sign in " -" for i in range(100)])
_WORD1 = _table([f"{i:04d}" for i in range(10_000)])
_WORD2 = _table([f"{i:03d}e" for i in range(1_000)])
_WORD3 = _table([f"{'-' if e < 0 else '+'}{abs(e):02d}," for e in range(-99, 100)])
# _POW10[k + 400] == 10.0**k, exactly rounded (parsed from decimal strings)
_POW10 = np.array([float(f"1e{k}") for k in range(-400, 401)], dtype=np.float64)
_LOG10_2 = 0.30102999566398120


def _format_flat(values: npt.NDArray[np.float64]) -> bytes:
    """Every value as a 16-byte record ending in ','; values must be finite with |v| < 1e99."""
    n = values.size
    magnitude = np.abs(values)
    zero = magnitude == 0.0
    magnitude[zero] = 1.0
    _, exp2 = np.frexp(magnitude)
    # magnitude is in [2**(exp2-1), 2**exp2): floor(log10) is this estimate or one more
    exponent = np.floor((exp2 - 1) * _LOG10_2).astype(np.int64)
    exponent += magnitude >= _POW10[exponent + 401]
    digits = np.rint(magnitude * _POW10[408 - exponent]).astype(np.int64)  # 9 digits: d.dddddddd x 1e8
    carry = digits >= 1_000_000_000
    if carry.any():
        digits[carry] = 100_000_000
        exponent += carry
    digits[zero] = 0
    exponent[zero] = 0
    head, tail = np.divmod(digits, 10_000_000)
    out = np.empty((n, 4), dtype=np.uint32)
    out[:, 0] = _WORD0[head + 100 * (values < 0)]
    middle, last = np.divmod(tail, 1_000)
    out[:, 1] = _WORD1[middle]
    out[:, 2] = _WORD2[last]
    out[:, 3] = _WORD3[exponent + 99]
    return out.tobytes()


def _slow_values(vector: npt.NDArray[np.float32]) -> bytes:
    # NaN / inf (a simulated broken server) or huge values: json writes the bare tokens NaN/Infinity
    return json.dumps([float(v) for v in vector.tolist()], allow_nan=True).encode()[1:-1]


def _fast_path_ok(flat: npt.NDArray[np.float64]) -> bool:
    if not np.isfinite(flat).all():
        return False
    magnitude = np.abs(flat)
    nonzero = magnitude[magnitude > 0]
    return float(magnitude.max()) < 1e99 and (nonzero.size == 0 or float(nonzero.min()) >= 1e-99)


def encode_values(vectors: Sequence[npt.NDArray[np.float32]]) -> list[bytes]:
    """The JSON array bodies (without brackets) of each vector's values, in order."""
    if not vectors:
        return []
    sizes = [int(v.size) for v in vectors]
    flat = np.concatenate([v.astype(np.float64, copy=False).ravel() for v in vectors])
    if flat.size and not _fast_path_ok(flat):
        return [_slow_values(v) for v in vectors]
    text = _format_flat(flat)
    parts: list[bytes] = []
    start = 0
    for size in sizes:
        end = start + size
        parts.append(text[start * _WIDTH : end * _WIDTH - 1] if size else b"")
        start = end
    return parts


def batch_body(vectors: Sequence[npt.NDArray[np.float32]]) -> bytes:
    """`{"embeddings":[{"values":[...]}, ...]}` as Google sends for batchEmbedContents."""
    items = b"},{".join(b'"values":[' + values + b"]" for values in encode_values(vectors))
    return b'{"embeddings":[{' + items + b"}]}" if vectors else b'{"embeddings":[]}'


def single_body(vector: npt.NDArray[np.float32]) -> bytes:
    """`{"embedding":{"values":[...]}}` as Google sends for embedContent."""
    return b'{"embedding":{"values":[' + encode_values([vector])[0] + b"]}}"
