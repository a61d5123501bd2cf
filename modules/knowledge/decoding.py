"""Text files as a Japanese office has them, decoded to `str`.

Read: UTF-8 with or without a BOM; UTF-16 and UTF-32 with a BOM; Shift_JIS, read as CP932 (Windows'
superset: ①, ㈱, 髙, ～ and the NEC/IBM extensions, which plain Shift_JIS refuses); EUC-JP; and
ISO-2022-JP (JIS, as old mail is kept). Anything else is refused with a message, in Japanese and
English, that says to save the file as UTF-8.

Without a BOM, strict UTF-8 is tried first (ASCII is UTF-8). Then charset-normalizer lists what the
bytes could be, each with a "chaos" score (how messy the decoded text looks). Japanese wins when one
of its encodings is among the least chaotic: short Shift_JIS text is as plausible as Big5 or GBK to a
detector, and a Japanese office's file is Japanese. Korean EUC-KR also decodes as EUC-JP, but into
kanji soup that scores messier than the Korean reading, so it is refused rather than stored garbled.

Nothing is normalized here: half-width katakana and full-width letters stay as they were written.
"""

from __future__ import annotations

import codecs

from charset_normalizer import from_bytes

from modules.knowledge.errors import UnreadableDocumentError

_BOMS = (  # UTF-32 LE's BOM starts with UTF-16 LE's, so UTF-32 is checked first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_JIS_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(I")  # ISO-2022-JP: kanji sets and half-width katakana
# Each family: the codec to read it with first, then the codecs the detector may name for it.
_JAPANESE = (
    ("cp932", ("cp932", "shift_jis", "shift_jis_2004", "shift_jisx0213")),
    ("euc_jp", ("euc_jp", "euc_jis_2004", "euc_jisx0213")),
)
_CHAOS_TOLERANCE = 0.01


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
    japanese = japanese_encoding(data)
    if japanese is None:
        raise UnreadableDocumentError(save_as_utf8(filename, "not UTF-8, Shift_JIS or EUC-JP"))
    return data.decode(japanese)


def japanese_encoding(data: bytes) -> str | None:
    """The codec that reads `data` as Japanese, if a Japanese reading is among the least chaotic ones."""
    matches = list(from_bytes(data))
    if not matches:
        return None
    least = min(match.chaos for match in matches)
    best: tuple[float, str] | None = None
    for preferred, family in _JAPANESE:
        for match in matches:
            if not set(match.could_be_from_charset) & set(family):
                continue
            if match.chaos > least + _CHAOS_TOLERANCE or (best is not None and match.chaos >= best[0]):
                continue
            for codec in (preferred, match.encoding):
                try:
                    data.decode(codec)
                except (UnicodeDecodeError, LookupError):
                    continue
                best = (match.chaos, codec)
                break
    return best[1] if best else None
