"""Text rules the core shares with the upload side: the canonical form of a text (what is chunked,
stored, hashed and cached), a local token estimate, and the hash that detects edits.

Normalization (`normalize_text`; the cache keys depend on it, so it must stay stable and idempotent):

- Broken UTF-16 is repaired: a surrogate pair stored as two code points becomes the real character,
  a lone surrogate (e.g. '\\ud800') becomes U+FFFD.
- CRLF and CR become LF; other line separators (VT, FF, NEL, U+2028, U+2029) become LF too, so a PDF's
  page break never glues two words together.
- NUL and every other C0/C1 control character except TAB and LF is removed, as are DEL and U+FEFF (BOM).
- Unicode NFC, *not* NFKC. NFC only composes canonically equivalent forms (macOS/PDF text often stores
  "が" as "か" + U+3099), which is invisible to a reader. NFKC rewrites what the author wrote (full-width
  "！" to "!", "①" to "1", "㈱" to "(株)", half-width kana to full-width), which changes the stored text
  and what the user sees quoted back; width folding is the search layer's job, not the stored text's.
  CJK compatibility ideographs (U+F900-U+FAFF, U+2F800-U+2FA1F) are kept as written even though NFC
  would map them to unified ideographs: in Japanese they are deliberate glyph variants (names, place
  names), and NFC would silently replace them.
- Trailing whitespace (including U+3000) is stripped from every line; two or more consecutive blank
  lines become one blank line; blank lines at the start and end of the text are removed.

Token estimate (`estimate_tokens`): every non-ASCII character (kana, kanji in and beyond the BMP, CJK
punctuation, hangul, emoji, accented letters, other scripts) counts one token; each run of ASCII between
them one token per 4 characters, rounded up. Gemini's SentencePiece vocabulary often merges two Japanese
characters, so this over-counts Japanese by up to about 2x: the safe side for quota pacing and the
model's input limit.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable

_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_SEPARATORS = re.compile("[\x0b\x0c\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufeff]")  # \t \n (and \v \f \r, already gone) kept
_COMPAT_IDEOGRAPHS = re.compile("([\uf900-\ufaff\U0002f800-\U0002fa1f]+)")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """The canonical form of a document's text, as chunked, stored and cached (see the module docstring)."""
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _LINE_SEPARATORS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _nfc_keeping_compat_ideographs(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip("\n")


def _nfc_keeping_compat_ideographs(text: str) -> str:
    if unicodedata.is_normalized("NFC", text):
        return text
    parts = _COMPAT_IDEOGRAPHS.split(text)  # odd indexes are the compatibility ideographs themselves
    return "".join(part if i % 2 else unicodedata.normalize("NFC", part) for i, part in enumerate(parts))


# --- Tokens and hashes -------------------------------------------------------------------------------

_ASCII_RUNS = re.compile("[\x00-\x7f]+")


def estimate_tokens(text: str) -> int:
    """A local, conservative token estimate for Gemini's tokenizer (see the module docstring): a number
    or a word inside Japanese text ("2026年", "VPNに") is at least one token."""
    if not text:
        return 0
    runs = _ASCII_RUNS.findall(text)
    ascii_chars = sum(len(run) for run in runs)
    return len(text) - ascii_chars + sum((len(run) + 3) // 4 for run in runs)


def truncate_to_tokens(text: str, limit: int, estimate: Callable[[str], int] = estimate_tokens) -> str:
    """The longest prefix whose estimated token count fits the limit (binary search on length)."""
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if estimate(text[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return text[:low]


def content_hash(text: str) -> str:
    """sha256 of a chunk's stored text, as SQL computes it, to detect edits made while in flight."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
