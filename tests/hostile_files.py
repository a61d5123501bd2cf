"""TEST-ONLY: files an attacker, or an ordinary Japanese office, would upload, built in memory and fast.

- `many_page_pdf(n)`: a valid PDF of n pages, one line of text each (5,000 pages in ~20 ms, 1.6 MB).
- `zip_bomb_docx(expanded, lie=...)`: a .docx whose main part inflates to `expanded` bytes of Japanese
  paragraphs (a ~1,000:1 deflate stream, written by hand). Honest, its zip headers declare the true size;
  lying, both the local header and the central directory declare `lie` bytes, with the CRC of that
  prefix, so a reader that trusts the headers stops there (and sees truncated XML).
- `docx_package(document_xml)`: a minimal Word package around any main part (malformed XML included).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    b"</Types>"
)
PACKAGE_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" '
    b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    b'Target="word/document.xml"/></Relationships>'
)
DOCUMENT_HEAD = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="{W_NS}"><w:body>'.encode()
)
DOCUMENT_TAIL = b"</w:body></w:document>"
PARAGRAPH = (
    "<w:p><w:r><w:t>" + "経費精算の締め日は毎月25日です。領収書は原本を提出してください。" * 3 + "</w:t></w:r></w:p>"
).encode()


# --- PDF -------------------------------------------------------------------------------------------


def many_page_pdf(pages: int, line: str = "Page {n}: the quarterly report lists every expense of the team.") -> bytes:
    """A valid PDF with `pages` pages sharing one font, each showing one line of ASCII text."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets: dict[int, int] = {}

    def obj(number: int, body: bytes) -> None:
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")

    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(pages))
    obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
    obj(2, b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages)
    obj(3, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i in range(pages):
        stream = b"BT /F1 12 Tf 72 720 Td (" + line.format(n=i + 1).encode() + b") Tj ET"
        obj(
            4 + 2 * i,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % (5 + 2 * i),
        )
        obj(5 + 2 * i, b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    size = 4 + 2 * pages
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for number in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets[number])
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref))
    return out.getvalue()


# --- zip, by hand -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    deflated: bytes  # raw deflate stream
    crc: int
    size: int  # what the headers declare
    method: int = 8


def deflated_entry(name: str, data: bytes) -> Entry:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return Entry(name, compressor.compress(data) + compressor.flush(), zlib.crc32(data), len(data))


def write_zip(entries: list[Entry], *, declared_entries: int | None = None, zip64: bool = False) -> bytes:
    """A zip of `entries`; its end record declares `declared_entries` (default: the truth). With `zip64`,
    the counts and the directory's place are in a Zip64 end record (the classic one says 0xFFFF...)."""
    out = io.BytesIO()
    central = []
    for entry in entries:
        offset = out.tell()
        name = entry.name.encode()
        out.write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                0,
                entry.method,
                0,
                0x21,
                entry.crc,
                len(entry.deflated),
                entry.size,
                len(name),
                0,
            )
            + name
        )
        out.write(entry.deflated)
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                entry.method,
                0,
                0x21,
                entry.crc,
                len(entry.deflated),
                entry.size,
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )
    start = out.tell()
    for record in central:
        out.write(record)
    count = len(entries) if declared_entries is None else declared_entries
    size = out.tell() - start
    if zip64:
        record_at = out.tell()
        out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, size, start))
        out.write(struct.pack("<IIQI", 0x07064B50, 0, record_at, 1))
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    else:
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, start, 0))
    return out.getvalue()


def docx_package(document_xml: bytes) -> bytes:
    """A minimal Word package (content types, relationships, main part) around `document_xml`."""
    return write_zip(
        [
            deflated_entry("[Content_Types].xml", CONTENT_TYPES),
            deflated_entry("_rels/.rels", PACKAGE_RELS),
            deflated_entry("word/document.xml", document_xml),
        ]
    )


def many_entry_docx(extra_entries: int, *, declared_entries: int | None = None, zip64: bool = False) -> bytes:
    """A readable Word package plus `extra_entries` empty entries, its end record declaring
    `declared_entries` (a lie, to get past a reader that trusts it)."""
    parts = [
        deflated_entry("[Content_Types].xml", CONTENT_TYPES),
        deflated_entry("_rels/.rels", PACKAGE_RELS),
        deflated_entry("word/document.xml", document_xml(["就業規則の本文です。"])),
    ]
    empty = [Entry(f"{i:x}", b"", 0, 0, method=0) for i in range(extra_entries)]
    return write_zip(parts + empty, declared_entries=declared_entries, zip64=zip64)


def document_xml(paragraphs: list[str]) -> bytes:
    body = "".join(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>" for text in paragraphs)
    return DOCUMENT_HEAD + body.encode() + DOCUMENT_TAIL


def zip_bomb_docx(expanded: int, *, lie: int | None = None) -> bytes:
    """A .docx whose word/document.xml inflates to about `expanded` bytes of paragraphs. With `lie`,
    its headers declare `lie` bytes (and that prefix's CRC) instead of the truth. Each 1 MB block is
    compressed once and its deflate output repeated (a full flush resets the compressor between blocks)."""
    block = PARAGRAPH * (1_000_000 // len(PARAGRAPH))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(DOCUMENT_HEAD) + compressor.flush(zlib.Z_FULL_FLUSH)
    packed_block = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks = max(0, (expanded - len(DOCUMENT_HEAD) - len(DOCUMENT_TAIL)) // len(block))
    tail = compressor.compress(DOCUMENT_TAIL) + compressor.flush()
    deflated = head + packed_block * blocks + tail
    size = len(DOCUMENT_HEAD) + blocks * len(block) + len(DOCUMENT_TAIL)
    if lie is not None:
        prefix = (DOCUMENT_HEAD + block * (lie // len(block) + 1))[:lie]
        main = Entry("word/document.xml", deflated, zlib.crc32(prefix), lie)
    else:
        crc = zlib.crc32(DOCUMENT_HEAD)
        for _ in range(blocks):
            crc = zlib.crc32(block, crc)
        main = Entry("word/document.xml", deflated, zlib.crc32(DOCUMENT_TAIL, crc), size)
    return write_zip(
        [deflated_entry("[Content_Types].xml", CONTENT_TYPES), deflated_entry("_rels/.rels", PACKAGE_RELS), main]
    )
