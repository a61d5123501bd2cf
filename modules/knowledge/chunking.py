"""Japanese-aware text chunking: normalize a document, cut it into sentences, pack sentences into chunks.

Text is normalized first (`modules.text.normalize_text`).

Sentences end at 。｡！？ and full-width ．, at ASCII '!' / '?' (unless followed by more ASCII text, as in
a URL's query string), at ASCII '.' followed by whitespace or the end, and at every newline. Not cut:
"3.14", "３．１４", "example.com", URLs, and line-start markers such as "1. ", "Q1．", "A. ". Closing
brackets and quotes after a sentence end stay with the sentence; 「…。」と / 「…。」って continues it.

Packing is greedy up to `target_chars` and `max_tokens` (estimated with `estimate_tokens`), with two
refinements: a chunk never ends on a heading (Markdown `#`, ■□◆【, 第N章/条, Q&A "Q." lines), which moves
to the next chunk with its section; and a full chunk ends at its last blank line or heading if that keeps
it at least half of `target_chars`. The overlap is whole sentences only: a chunk starts with none when the
previous chunk's last sentence is longer than `overlap_chars` (common with Japanese sentences of 40-80
characters and the default of 50), when that chunk ended inside an overlong sentence, or when it starts
at a heading (the previous section's last sentence would only add noise).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace

from modules.text import estimate_tokens, normalize_text

# --- Options and results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkingOptions:
    """Sizes in characters of the normalized text; `max_tokens` is checked with `estimate_tokens`."""

    target_chars: int = 500
    overlap_chars: int = 50
    max_tokens: int = 2048

    def __post_init__(self) -> None:
        if self.target_chars <= 0:
            raise ValueError(f"target_chars must be > 0, got {self.target_chars}")
        if not 0 <= self.overlap_chars < self.target_chars:
            raise ValueError(f"overlap_chars must be >= 0 and < target_chars, got {self.overlap_chars}")
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {self.max_tokens}")


DEFAULT_OPTIONS = ChunkingOptions()


@dataclass(frozen=True)
class Chunk:
    """One chunk and where it sits in `normalize_text(document)`.

    `text == normalized[start:end]`. The first `overlap` characters of `text` repeat the end of the
    previous chunk (whole sentences, plus the whitespace after them); `text[overlap:]` is new content.
    Between one chunk's `end` and the next chunk's new content there is only whitespace.
    """

    text: str
    start: int
    end: int
    overlap: int


# --- Sentences ---------------------------------------------------------------------------------------

_TERMINATOR_RUN = re.compile(r"[。｡！？．!?.]+")
_JAPANESE_TERMINATORS = frozenset("。｡！？")
_CLOSERS = frozenset("」』）)]］｝}】〕〉》〗〙〛”’»｣\"'")
_STRAIGHT_QUOTES = frozenset("\"'")
_URL = re.compile(r"https?://[!-~]+")
_URL_TRAILING_PUNCTUATION = ".,!?:;)]}>'\""
_LIST_MARKER = re.compile(r"[QAＱＡ]?[0-9０-９]{1,3}|[A-Za-zＡ-Ｚａ-ｚ]")
_LIST_MARKER_PREFIX = re.compile(r"[\s#>*+\-]*")
_HEADING = re.compile(
    r"\s*(?:\*\*)?(?:#{1,6}\s|[■□◆【]|[QＱ][0-9０-９]*[.．:：、）)\s]|第[0-9０-９一二三四五六七八九十百]+[章節条部項])"
)
_MAX_HEADING_CHARS = 80
_COMMAS = frozenset("、，､；;")


@dataclass(frozen=True)
class _Unit:
    """A sentence (or, when `whole` is False, a piece of an overlong one): `text[start:end]`, trimmed."""

    start: int
    end: int
    whole: bool = True
    heading: bool = False
    section_start: bool = False  # first sentence after a blank line, or the first of a heading line


def _url_spans(line: str) -> list[tuple[int, int]]:
    spans = []
    for match in _URL.finditer(line):
        end = match.end()
        while end > match.start() and line[end - 1] in _URL_TRAILING_PUNCTUATION:
            end -= 1
        spans.append((match.start(), end))
    return spans


def _after_closers(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in _CLOSERS:
        if line[pos] in _STRAIGHT_QUOTES and pos + 1 < len(line) and line[pos + 1].isalnum():
            break  # a straight quote followed by a word opens the next sentence
        pos += 1
    return pos


def _follows_list_marker(line: str, pos: int) -> bool:
    """True for the period of a marker at the start of a line ("1. ", "## 2．", "Q1．", "A. "): not a sentence end."""
    begin = pos
    while begin > 0 and not line[begin - 1].isspace():
        begin -= 1
    return (
        _LIST_MARKER.fullmatch(line[begin:pos]) is not None and _LIST_MARKER_PREFIX.fullmatch(line[:begin]) is not None
    )


def _is_sentence_end(line: str, run: str, begin: int, run_end: int, end: int) -> bool:
    following = line[end] if end < len(line) else ""
    if end > run_end and (following == "と" or line.startswith("って", end)):
        return False  # 「はい。」と言った: the quote continues the sentence
    if run in (".", "．") and _follows_list_marker(line, begin):
        return False
    if any(char in _JAPANESE_TERMINATORS for char in run):
        return True
    if "．" in run:  # full-width numbers: "３．１４"
        return not (begin > 0 and line[begin - 1].isdigit() and run_end < len(line) and line[run_end].isdigit())
    if "!" in run or "?" in run:
        return not following or following.isspace() or ord(following) > 0x7E
    return not following or following.isspace()


def _sentence_ends(line: str) -> list[int]:
    """End offsets (exclusive, closers included) of the sentences of one line, in order."""
    urls = _url_spans(line)
    ends = []
    for match in _TERMINATOR_RUN.finditer(line):
        begin, run_end = match.span()
        if any(start <= begin < stop for start, stop in urls):
            continue
        end = _after_closers(line, run_end)
        if _is_sentence_end(line, match.group(), begin, run_end, end):
            ends.append(end)
    return ends


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _sentences(text: str) -> list[_Unit]:
    units: list[_Unit] = []
    offset = 0
    blank_before = True
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            blank_before = True
        else:
            heading = len(stripped) <= _MAX_HEADING_CHARS and _HEADING.match(line) is not None
            first_in_line = True
            previous = 0
            for boundary in [*_sentence_ends(line), len(line)]:
                start, end = _trim(line, previous, boundary)
                previous = boundary
                if start == end:
                    continue
                section_start = first_in_line and (blank_before or heading)
                units.append(_Unit(offset + start, offset + end, heading=heading, section_start=section_start))
                first_in_line = False
            blank_before = False
        offset += len(line) + 1
    return units


# --- Overlong sentences ------------------------------------------------------------------------------

Fits = Callable[[int, int], bool]


def _continues_cluster(text: str, pos: int) -> bool:
    """True when a cut before `pos` would separate a character from its mark, selector or ZWJ partner."""
    char = text[pos]
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")  # combining marks, variation selectors (IVS)
        or char == "\u200d"
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # emoji skin tones
        or text[pos - 1] == "\u200d"
    )


def _longest_fitting(start: int, end: int, fits: Fits) -> int:
    """The largest `stop` in (start, end] with `fits(start, stop)`; at least start + 1."""
    low, high = start + 1, end
    while low < high:
        middle = (low + high + 1) // 2
        if fits(start, middle):
            low = middle
        else:
            high = middle - 1
    return low


def _cut_position(text: str, start: int, limit: int, urls: list[tuple[int, int]]) -> int:
    """Where to end a piece of an overlong sentence that must end by `limit` (the piece may be trimmed).

    Best is after a comma, then at a space, in the second half of the allowed length; then anywhere;
    else before a URL that `limit` falls in; else a hard cut at `limit`, moved back so as not to split a
    character from its combining marks. Never inside a URL unless the URL alone is over the limit.
    """

    def in_url(pos: int) -> bool:
        return any(url_start < pos < url_end for url_start, url_end in urls)

    for lowest in (start + max(1, (limit - start) // 2), start + 1):
        for pos in range(limit, lowest - 1, -1):
            comma = text[pos - 1]
            if (comma in _COMMAS or (comma == "," and text[pos].isspace())) and not in_url(pos):
                return pos
        for pos in range(limit, lowest - 1, -1):
            if text[pos].isspace():
                return pos
    for url_start, url_end in urls:
        if start < url_start < limit < url_end:
            return url_start
    pos = limit
    while pos > start + 1 and _continues_cluster(text, pos):
        pos -= 1
    return limit if _continues_cluster(text, pos) else pos


def _split_overlong(text: str, unit: _Unit, fits: Fits) -> list[_Unit]:
    if fits(unit.start, unit.end):
        return [unit]
    urls = [(unit.start + begin, unit.start + end) for begin, end in _url_spans(text[unit.start : unit.end])]
    pieces: list[_Unit] = []
    start = unit.start
    while not fits(start, unit.end):
        cut = _cut_position(text, start, _longest_fitting(start, unit.end, fits), urls)
        piece_start, piece_end = _trim(text, start, cut)
        pieces.append(_Unit(piece_start, piece_end, whole=False))
        start, _ = _trim(text, cut, unit.end)
    pieces.append(_Unit(start, unit.end, whole=False))
    return [replace(pieces[0], heading=unit.heading, section_start=unit.section_start), *pieces[1:]]


# --- Packing -----------------------------------------------------------------------------------------


def _overlap_start(units: list[_Unit], first: int, last: int, overlap_chars: int) -> int:
    """Index of the first of the previous chunk's trailing whole sentences that fit in `overlap_chars`.

    Returns `last + 1` (no overlap) when even the last sentence is longer, or is a piece of a sentence.
    Never the previous chunk's first unit: the overlap is a proper suffix.
    """
    begin = last + 1
    while begin - 1 > first and units[begin - 1].whole and units[last].end - units[begin - 1].start <= overlap_chars:
        begin -= 1
    return begin


def _chunk_end(units: list[_Unit], new: int, last: int, start: int, target_chars: int) -> int:
    """Refine the greedy end `last` of a chunk that has more text after it (see the module docstring).

    Prefer ending before the latest heading, else before the latest paragraph, as long as the chunk keeps
    at least half of `target_chars`; `last + 1` is a candidate too (the greedy end may already be right).
    """
    end = last
    for wanted in ("heading", "paragraph"):
        found = next(
            (
                candidate - 1
                for candidate in range(last + 1, new, -1)
                if units[candidate].section_start
                and (wanted == "paragraph" or units[candidate].heading)
                and not units[candidate - 1].heading
                and units[candidate - 1].end - start >= target_chars // 2
            ),
            None,
        )
        if found is not None:
            end = found
            break
    kept = end
    while kept > new and units[kept].heading:
        kept -= 1
    return end if units[kept].heading else kept  # a chunk of headings only keeps them all


def _pack(text: str, units: list[_Unit], options: ChunkingOptions, fits: Fits) -> list[Chunk]:
    chunks: list[Chunk] = []
    previous: tuple[int, int] | None = None
    new = 0
    while new < len(units):
        first = new
        if previous is not None and not units[new].heading:
            first = _overlap_start(units, *previous, options.overlap_chars)
        while first < new and not fits(units[first].start, units[new].end):
            first += 1
        start = units[first].start
        last = new
        while last + 1 < len(units) and fits(start, units[last + 1].end):
            last += 1
        if last + 1 < len(units):
            last = _chunk_end(units, new, last, start, options.target_chars)
        end = units[last].end
        chunks.append(Chunk(text=text[start:end], start=start, end=end, overlap=units[new].start - start))
        previous = (first, last)
        new = last + 1
    return chunks


# --- Public API --------------------------------------------------------------------------------------


def split_with_offsets(text: str, options: ChunkingOptions = DEFAULT_OPTIONS) -> list[Chunk]:
    """Chunks of `normalize_text(text)` with their offsets in it (see `Chunk`). Deterministic."""
    normalized = normalize_text(text)

    def fits(start: int, end: int) -> bool:
        return end - start <= options.target_chars and estimate_tokens(normalized[start:end]) <= options.max_tokens

    units = [piece for unit in _sentences(normalized) for piece in _split_overlong(normalized, unit, fits)]
    return _pack(normalized, units, options, fits)


def split_sentences(text: str) -> list[str]:
    """The sentences of `normalize_text(text)`, as the chunker sees them (lines count as sentences)."""
    normalized = normalize_text(text)
    return [normalized[unit.start : unit.end] for unit in _sentences(normalized)]


def split_into_chunks(text: str, options: ChunkingOptions = DEFAULT_OPTIONS) -> list[str]:
    """Split a document into chunks to embed: whole sentences, up to `options.target_chars` characters
    and never over `options.max_tokens` estimated tokens, each starting with up to `options.overlap_chars`
    of the previous chunk's last whole sentences. The text is normalized first (`normalize_text`)."""
    return [chunk.text for chunk in split_with_offsets(text, options)]


__all__ = [
    "DEFAULT_OPTIONS",
    "Chunk",
    "ChunkingOptions",
    "normalize_text",
    "split_into_chunks",
    "split_sentences",
    "split_with_offsets",
]
