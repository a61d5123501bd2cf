"""Text files as a Japanese office has them, decoded to `str`.

Read: UTF-8 with or without a BOM; UTF-16 and UTF-32 with a BOM; Shift_JIS, read as CP932 (Windows'
superset: ①, ㈱, 髙, ～ and the NEC/IBM extensions, which plain Shift_JIS refuses); EUC-JP (with the
NEC row of ①, ㈱ as EUC-JP-MS writes it); and ISO-2022-JP (JIS, as old mail is kept). Anything else is
refused with a message, in Japanese and English, that says to save the file as UTF-8.

Without a BOM, strict UTF-8 is tried first (ASCII is UTF-8). Otherwise the bytes are decoded strictly
as CP932 and as EUC-JP, and each reading that decodes is judged as Japanese text, on evidence:

- a reading with a private-use character, U+FFFD or a control character (other than tab, line and
  page breaks) is not text: EUC-JP read as CP932 typically gives private-use characters;
- each other character counts towards "plausible Japanese": kana, JIS level-1 kanji (the common
  ones), JIS symbols, full-width forms and half-width katakana fully; half-width punctuation and small
  kana half; level-2 and extension kanji a quarter (EUC-JP read as CP932 gives half-width katakana
  mixed with rare kanji; Latin-1 read as CP932 gives rare kanji); anything else (Latin-1 letters, Thai,
  Hangul) not at all. The reading with the highest share wins, then the one with more kana, then
  CP932 (the more common of the two in an office);
- the winner must be at least 75% plausible, and a text of 16 or more non-ASCII characters must be
  at least 5% kana: Korean EUC-KR and Chinese GB2312 decode as EUC-JP too, into kanji without a
  single kana, which no Japanese document of that length is.

A short text without kana (a heading such as "# 就業規則（抜粋）") is read as Japanese when one reading is
more plausible than the other: its bytes could as well be Korean or Chinese, and a Japanese office's
file is Japanese. A few characters alone can read well both ways (half-width katakana in CP932 are
kanji in EUC-JP, and the other way round): the more plausible reading wins, then the one with more
kana, then CP932. A line of half-width katakana and punctuation alone may then be misread; a real
document has kana enough to decide (every line of the bundled samples, in either encoding, is read
exactly). A long text of half-width katakana only (no full-width kana) is refused.

Nothing is normalized here: half-width katakana and full-width letters stay as they were written.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from modules.knowledge.errors import UnreadableDocumentError

_BOMS = (  # UTF-32 LE's BOM starts with UTF-16 LE's, so UTF-32 is checked first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_JIS_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(I")  # ISO-2022-JP: kanji sets and half-width katakana
# Each family, in order of preference on a tie: the codecs tried, the first that decodes strictly is the
# family's reading. euc_jis_2004 reads the NEC row (①, ㈱, №) that EUC-JP-MS files hold and euc_jp refuses.
_FAMILIES = (("cp932",), ("euc_jp", "euc_jis_2004"))
# Not text in any reading: C0 controls but tab, line and page breaks and ^Z; DEL and C1 controls; private use.
_IMPOSSIBLE = re.compile(r"[\x00-\x08\x0e-\x19\x1b-\x1f\x7f-\x9f\ue000-\uf8ff\ufffd\U000f0000-\U0010ffff]")
MIN_PLAUSIBLE = 0.75
MIN_KANA_SHARE = 0.05
KANA_CHECK_FROM = 16  # non-ASCII characters


def save_as_utf8(filename: str, reason: str) -> str:
    return (
        f"{filename}: {reason}. テキストの文字コードを読み取れませんでした。"
        "UTF-8 で保存し直してからアップロードしてください"
        " / the text encoding was not recognised (UTF-8, UTF-16 with BOM, Shift_JIS/CP932 and EUC-JP are read): "
        "save the file as UTF-8 and upload it again"
    )


def decode_text(filename: str, data: bytes) -> str:
    """The text of a `.txt` / `.md` upload; UnreadableDocumentError for an encoding we don't read."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                broken = f"broken {codec.removesuffix('-sig')} text"
                raise UnreadableDocumentError(save_as_utf8(filename, broken)) from None
    if any(escape in data for escape in _JIS_ESCAPES):
        for codec in ("iso2022_jp_ext", "iso2022_jp_2004"):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                continue
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    reading = japanese_reading(data)
    if reading is None:
        raise UnreadableDocumentError(save_as_utf8(filename, "not UTF-8, Shift_JIS or EUC-JP"))
    return reading.text


@dataclass(frozen=True)
class Reading:
    """One way of reading the bytes as Japanese, and the evidence for it."""

    codec: str
    text: str
    plausible: float  # weighted share of the non-ASCII characters that Japanese text is made of (0 to 1)
    kana: int  # hiragana and full-width katakana
    half_width: int  # half-width katakana
    non_ascii: int

    @property
    def acceptable(self) -> bool:
        if self.plausible < MIN_PLAUSIBLE:
            return False
        return self.non_ascii < KANA_CHECK_FROM or self.kana >= MIN_KANA_SHARE * self.non_ascii


def japanese_encoding(data: bytes) -> str | None:
    """The codec that reads `data` as Japanese (see the module docstring), or None."""
    reading = japanese_reading(data)
    return reading.codec if reading else None


def japanese_reading(data: bytes) -> Reading | None:
    """The most plausible Japanese reading of `data` if it is plausible enough, else None."""
    readings = [r for r in (_read(data, family) for family in _FAMILIES) if r is not None]
    if not readings:
        return None
    # max() keeps the first of equals: CP932 on a full tie.
    best = max(readings, key=lambda r: (r.plausible, r.kana + r.half_width))
    return best if best.acceptable else None


def _read(data: bytes, family: tuple[str, ...]) -> Reading | None:
    for codec in family:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        return _judge(codec, text)
    return None


def _judge(codec: str, text: str) -> Reading | None:
    if _IMPOSSIBLE.search(text):
        return None
    weight = kana = half_width = non_ascii = 0.0
    for char, count in Counter(text).items():
        if char < "\x80":
            continue
        kind, value = _kind(char)
        if kind == "impossible":
            return None
        non_ascii += count
        weight += value * count
        if kind == "kana":
            kana += count
        elif kind == "half_width":
            half_width += count
    if not non_ascii:
        return None
    return Reading(codec, text, weight / non_ascii, int(kana), int(half_width), int(non_ascii))


@lru_cache(maxsize=8192)
def _kind(char: str) -> tuple[str, float]:
    """What a non-ASCII character is, and how much it counts towards plausible Japanese."""
    code = ord(char)
    category = unicodedata.category(char)
    if category in ("Co", "Cc", "Cs", "Cn") or char == "\ufffd":
        return "impossible", 0.0  # private use, C1 controls, surrogates, unassigned, replacement
    if 0x3041 <= code <= 0x30FF:
        return "kana", 1.0
    if 0xFF61 <= code <= 0xFF9F:
        small = code <= 0xFF65 or 0xFF67 <= code <= 0xFF6F  # ｡｢｣､･ and ｧｨｩｪｫｬｭｮｯ
        return "half_width", 0.5 if small else 1.0
    jis = _euc_bytes(char)
    if unicodedata.name(char, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")):
        level1 = jis is not None and len(jis) == 2 and 0xB0 <= jis[0] <= 0xCF
        return "kanji", 1.0 if level1 else 0.25
    if jis is not None and len(jis) == 2 and jis[0] <= 0xA8:
        return "symbol", 1.0  # JIS X 0208 rows 1-8: punctuation, full-width forms, Greek, Cyrillic, lines
    if _is_nec_special(char):
        return "symbol", 1.0  # ①, ㈱, №, ㍉ (CP932 and EUC-JP-MS)
    return "other", 0.0


def _euc_bytes(char: str) -> bytes | None:
    try:
        return char.encode("euc_jp")
    except UnicodeEncodeError:
        return None


def _is_nec_special(char: str) -> bool:
    try:
        encoded = char.encode("cp932")
    except UnicodeEncodeError:
        return False
    return len(encoded) == 2 and encoded[0] == 0x87
