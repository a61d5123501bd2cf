"""A simple, deterministic stand-in for Gemini's tokenizer.

Every CJK ideograph, kana, hangul or full-width character counts as one token; every other run of
characters counts one token per 4 characters (rounded up). A non-empty text is at least one token.
It is not Google's SentencePiece count, but it has the right order of magnitude for both Japanese
and English text, and it is cheap and stable, which is what quota and limit tests need.
"""

from __future__ import annotations

import re

CHARS_PER_TOKEN = 4

# Kana, CJK symbols and punctuation, bopomofo, hangul jamo/syllables, CJK ideographs (BMP, extension
# A and the supplementary planes), compatibility ideographs and full-/half-width forms.
_CJK = re.compile(
    "["
    "\u1100-\u11ff"
    "\u2e80-\u2fdf"
    "\u3000-\u303f"
    "\u3040-\u309f"
    "\u30a0-\u30ff"
    "\u3100-\u312f"
    "\u3130-\u318f"
    "\u31f0-\u31ff"
    "\u3400-\u4dbf"
    "\u4e00-\u9fff"
    "\uac00-\ud7af"
    "\uf900-\ufaff"
    "\uff00-\uffef"
    "\U00020000-\U0003134f"
    "]"
)


def _run_tokens(length: int) -> int:
    return (length + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def count_tokens(text: str) -> int:
    """The simulated token count of `text` (0 only for the empty string)."""
    if not text:
        return 0
    pieces = _CJK.split(text)
    total = len(pieces) - 1  # one token per CJK character
    for piece in pieces:
        if piece:
            total += _run_tokens(len(piece))
    return max(total, 1)


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of `text` whose token count is at most `limit` (cut on the same grid that
    `count_tokens` uses, so `count_tokens(truncate_to_tokens(t, n)) <= n`)."""
    if limit <= 0:
        return ""
    if count_tokens(text) <= limit:
        return text
    used = 0
    pos = 0
    for match in _CJK.finditer(text):
        run = match.start() - pos
        if run:
            cost = _run_tokens(run)
            if used + cost > limit:
                return text[: pos + (limit - used) * CHARS_PER_TOKEN]
            used += cost
        if used >= limit:
            return text[: match.start()]
        used += 1
        pos = match.end()
    return text[: pos + (limit - used) * CHARS_PER_TOKEN]
