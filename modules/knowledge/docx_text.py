"""The text of a .docx, read as if it were hostile: a .docx is a zip of XML parts, and a small file
can decompress to gigabytes (a zip bomb) or hold XML built to exhaust a parser.

- The zip's central directory may hold at most a few thousand entries (a .docx has a few dozen),
  counted header by header where zipfile will read them, before zipfile reads any (the count the
  end record declares is not trusted).
- Only the parts needed are decompressed: `_rels/.rels`, to find the main document part, and that
  part. Before a part is read its declared size is checked against what is left of `max_bytes`;
  while it is read, the bytes that actually come out are counted, and reading stops the moment the
  count passes the limit. Neither the local header nor the central directory is trusted.
- The XML is parsed as a stream (lxml iterparse) with entities unresolved and no network or DTD
  loading; each paragraph is turned into text and dropped from the tree at once, so memory follows the
  text, not the markup. Extraction stops once the text passes `max_chars`.

Text, in document order: each body paragraph is a line (runs' text, tabs, line breaks); each table
row is one line of its cells joined by " | ", a cell's paragraphs joined by newlines (as python-docx's
`cell.text`); a nested table's rows go into the cell that holds them. Deleted text (tracked changes)
and field codes are left out. Headers, footers and footnotes are not read.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from typing import IO

from lxml import etree

from modules.knowledge.errors import DocumentTooLargeError, UnreadableDocumentError

MAX_ZIP_ENTRIES = 5_000
_READ_SIZE = 64 * 1024
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD = b"PK\x06\x06"
_ZIP64_EOCD_SIZE = 56
_CD_SIGNATURE = b"PK\x01\x02"
_CD_HEADER_SIZE = 46
_MAIN_RELATIONSHIP = "/officeDocument"  # transitional and strict OOXML both end the type with this
_DEFAULT_MAIN_PART = "word/document.xml"
_RUN_TEXT = {"tab": "\t", "ptab": "\t", "br": "\n", "cr": "\n", "noBreakHyphen": "-"}


class _Budget:
    """Decompressed bytes left to read, shared by every part of one file."""

    def __init__(self, filename: str, limit: int) -> None:
        self.filename = filename
        self.limit = limit
        self.used = 0

    def refuse(self, what: str) -> DocumentTooLargeError:
        return DocumentTooLargeError(
            f"{self.filename}: {what}, more than the limit of {self.limit:,} bytes (UPLOAD_MAX_DOCX_BYTES); "
            "a .docx that expands this much is refused as a possible zip bomb",
            "UPLOAD_MAX_DOCX_BYTES",
        )

    def check_declared(self, info: zipfile.ZipInfo) -> None:
        if info.file_size > self.limit - self.used:
            raise self.refuse(f"its part {info.filename} says it expands to {info.file_size:,} bytes")

    def spend(self, count: int, part: str) -> None:
        self.used += count
        if self.used > self.limit:
            raise self.refuse(f"its part {part} expanded past {self.limit:,} bytes while being read")


class _CountingReader:
    """A zip member's decompressed stream, counted against the budget as it is read."""

    def __init__(self, stream: IO[bytes], budget: _Budget, part: str) -> None:
        self._stream = stream
        self._budget = budget
        self._part = part

    def read(self, size: int = -1) -> bytes:
        want = _READ_SIZE if size is None or size < 0 else min(size, _READ_SIZE)
        data = self._stream.read(want)
        self._budget.spend(len(data), self._part)
        return data


def docx_text(filename: str, data: bytes, *, max_bytes: int, max_chars: int) -> str:
    """The text of a .docx (see the module docstring); raises UnreadableDocumentError or
    DocumentTooLargeError (naming UPLOAD_MAX_DOCX_BYTES or UPLOAD_MAX_CHARS)."""
    _check_entry_count(filename, data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error) as exc:
        raise UnreadableDocumentError(f"{filename}: not a readable .docx (not a zip archive: {_said(exc)})") from None
    budget = _Budget(filename, max_bytes)
    with archive:
        main = _main_part(filename, archive, budget)
        lines = _document_lines(filename, archive, main, budget, max_chars)
        return "\n".join(lines)


def _check_entry_count(filename: str, data: bytes) -> None:
    """Refuse a zip whose central directory holds thousands of entries before zipfile builds one object
    per entry. The entries are counted where zipfile will read them (the directory's declared size,
    just before the end record), header by header: the count the end record declares is not trusted."""
    directory = _central_directory(data)
    if directory is None:
        return  # not a zip (or a broken one): zipfile says so with its own reason
    position, end = directory
    entries = 0
    while position + _CD_HEADER_SIZE <= end and data.startswith(_CD_SIGNATURE, position):
        entries += 1
        if entries > MAX_ZIP_ENTRIES:
            raise UnreadableDocumentError(
                f"{filename}: not a readable .docx (its zip's directory holds more than {MAX_ZIP_ENTRIES:,} "
                "entries; a Word file has a few dozen)"
            )
        name, extra, comment = struct.unpack_from("<HHH", data, position + 28)
        position += _CD_HEADER_SIZE + name + extra + comment


def _central_directory(data: bytes) -> tuple[int, int] | None:
    """Where zipfile will read the central directory: (start, end) offsets in `data`, found as zipfile
    finds them (the end record, then a Zip64 end record right before its locator)."""
    if len(data) >= _EOCD_SIZE and data.startswith(_EOCD, len(data) - _EOCD_SIZE):
        end = len(data) - _EOCD_SIZE
    else:
        end = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - 65_535))
        if end < 0 or end + _EOCD_SIZE > len(data):
            return None
    size = struct.unpack_from("<I", data, end + 12)[0]
    record = end
    locator = end - _ZIP64_LOCATOR_SIZE
    zip64 = locator - _ZIP64_EOCD_SIZE  # without both signatures zipfile keeps the classic end record
    if zip64 >= 0 and data.startswith(_ZIP64_LOCATOR, locator) and data.startswith(_ZIP64_EOCD, zip64):
        record = zip64
        size = struct.unpack_from("<Q", data, record + 40)[0]
    start = record - size
    return (start, record) if start >= 0 else None


def _open(filename: str, archive: zipfile.ZipFile, name: str, budget: _Budget) -> _CountingReader | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    budget.check_declared(info)
    try:
        stream = archive.open(info)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        raise UnreadableDocumentError(f"{filename}: not a readable .docx (part {name}: {_said(exc)})") from None
    return _CountingReader(stream, budget, name)


def _main_part(filename: str, archive: zipfile.ZipFile, budget: _Budget) -> str:
    """The main document part named by the package relationships (usually word/document.xml)."""
    reader = _open(filename, archive, "_rels/.rels", budget)
    if reader is None:
        return _DEFAULT_MAIN_PART
    for _, element in _parse(filename, "_rels/.rels", reader, ("end",)):
        if _local(element) == "Relationship" and str(element.get("Type", "")).endswith(_MAIN_RELATIONSHIP):
            return str(element.get("Target", "")).lstrip("/") or _DEFAULT_MAIN_PART
    return _DEFAULT_MAIN_PART


def _document_lines(filename: str, archive: zipfile.ZipFile, part: str, budget: _Budget, max_chars: int) -> list[str]:
    reader = _open(filename, archive, part, budget)
    if reader is None:
        raise UnreadableDocumentError(f"{filename}: not a readable .docx (it has no {part})")
    lines: list[str] = []
    chars = 0
    cells: list[list[str]] = []  # the paragraphs of each open table cell, innermost last
    rows: list[list[list[str]]] = []  # the cells of each open table row, innermost last
    root_checked = False
    for event, element in _parse(filename, part, reader, ("start", "end")):
        name = _local(element)
        if not root_checked:
            root_checked = True
            if name != "document":
                raise UnreadableDocumentError(
                    f"{filename}: not a Word document (its main part {part} is a {name or 'unknown'} part)"
                )
        if event == "start":
            if name == "tr":
                rows.append([])
            elif name == "tc" and rows:
                cell: list[str] = []
                rows[-1].append(cell)
                cells.append(cell)
            continue
        if name == "p":
            text = _paragraph_text(element)
        elif name == "tc" and cells:
            cells.pop()
            _drop(element)
            continue
        elif name == "tr" and rows:
            text = " | ".join("\n".join(cell) for cell in rows.pop())
        else:
            if name in ("tbl", "tr", "tc"):
                _drop(element)
            continue
        _drop(element)
        if cells:
            cells[-1].append(text)
            continue
        chars += len(text) + 1
        if chars > max_chars:
            raise DocumentTooLargeError(
                f"{filename}: more than {max_chars:,} characters of text (UPLOAD_MAX_CHARS)", "UPLOAD_MAX_CHARS"
            )
        lines.append(text)
    return lines


def _parse(
    filename: str, part: str, reader: _CountingReader, events: tuple[str, ...]
) -> Iterator[tuple[str, etree._Element]]:
    parser = etree.iterparse(
        reader,
        events=events,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        yield from parser
    except etree.XMLSyntaxError as exc:
        raise UnreadableDocumentError(f"{filename}: not a readable .docx (malformed XML in {part}: {exc})") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, UnreadableDocumentError):
            raise
        raise UnreadableDocumentError(f"{filename}: not a readable .docx (part {part}: {_said(exc)})") from None


def _paragraph_text(paragraph: etree._Element) -> str:
    parts: list[str] = []
    for element in paragraph.iter():
        name = _local(element)
        if name == "t":
            parts.append(element.text or "")
        elif name in _RUN_TEXT:
            parts.append(_RUN_TEXT[name])
    return "".join(parts)


def _drop(element: etree._Element) -> None:
    """Free what has been read: the element's content and the siblings before it."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _local(element: etree._Element) -> str:
    """The tag's local name ("{namespace}p" and an unbound "w:p" are both "p")."""
    tag = element.tag
    return tag.rpartition("}")[2].rpartition(":")[2] if isinstance(tag, str) else ""


def _said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
