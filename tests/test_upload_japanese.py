"""A Japanese office's files: text in UTF-8 (with or without BOM), UTF-16 with BOM, Shift_JIS / CP932,
EUC-JP and ISO-2022-JP is read; anything else is refused in Japanese and English; half-width katakana
and full-width letters are stored as written; .docx paragraphs and tables come out in document order."""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from docx import Document

from modules.knowledge.decoding import decode_text
from modules.knowledge.errors import UnreadableDocumentError
from modules.knowledge.extract import extract_text
from modules.knowledge.ingest import read_text_file
from modules.settings import Settings
from tests.api_helpers import API_TOKEN, running_app, upload
from tests.helpers import create_tables, fetch_all

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
OFFICE_TEXT = (
    "経費精算の締め日は毎月２５日です。領収書は原本を提出してください。\n"
    "ｶﾀｶﾅの部署名（ｿｳﾑﾌﾞ）と全角英数字ＡＢＣ１２３はそのまま残ります。\n"
)
WINDOWS_ONLY = "①番の申請は㈱サンプル商事の髙橋さん～担当です。№１"  # CP932, not plain Shift_JIS


@pytest.mark.parametrize(
    ("encoded", "text"),
    [
        (OFFICE_TEXT.encode("utf-8"), OFFICE_TEXT),
        (codecs.BOM_UTF8 + OFFICE_TEXT.encode("utf-8"), OFFICE_TEXT),
        (OFFICE_TEXT.encode("utf-16"), OFFICE_TEXT),  # with the platform's BOM
        (codecs.BOM_UTF16_BE + OFFICE_TEXT.encode("utf-16-be"), OFFICE_TEXT),
        (OFFICE_TEXT.encode("shift_jis"), OFFICE_TEXT),
        ((OFFICE_TEXT + WINDOWS_ONLY).encode("cp932"), OFFICE_TEXT + WINDOWS_ONLY),
        (OFFICE_TEXT.encode("euc_jp"), OFFICE_TEXT),
        ("締め日は２５日です。".encode("euc_jp"), "締め日は２５日です。"),
        ("経費".encode("shift_jis"), "経費"),  # two kanji: as plausible as Big5 to a detector; Japanese wins
        (OFFICE_TEXT.encode("iso2022_jp_ext"), OFFICE_TEXT),
        (b"plain ASCII notes\n", "plain ASCII notes\n"),
    ],
)
def test_japanese_office_encodings_are_read_exactly(encoded: bytes, text: str) -> None:
    assert decode_text("memo.txt", encoded) == text


@pytest.mark.parametrize(
    "encoded",
    [
        "Le café est fermé à midi; réunion à l'hôtel de ville.".encode("latin-1"),
        "Привет, это документ на русском языке.".encode("cp1251"),
        "이것은 한국어 테스트 문서입니다. 오늘 회의에서 예산을 논의합니다.".encode("euc_kr"),
        "这是一个中文测试文档，用于检测编码。我们今天开会讨论预算。".encode("gb2312"),
        "這是一個中文測試文件，用於檢測編碼。我們今天開會討論預算。".encode("big5"),
        "这是一个中文测试文档，用于检测编码。我们今天开会讨论预算。".encode("gbk"),
        "Привет, это документ на русском языке.".encode("koi8_r"),
        "Καλημέρα κόσμε, αυτό είναι ένα έγγραφο.".encode("iso8859_7"),
        "สวัสดีครับ นี่คือเอกสารภาษาไทย".encode("tis_620"),
        "La générale présente l'été élégant".encode("latin-1"),  # é + letter is a CP932 kanji pair
        "Caf\u00e9 \u201cquoted\u201d na\u00efve".encode("cp1252"),
        "経費精算の締め日".encode("utf-16-le"),  # UTF-16 without a BOM
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 4,
    ],
)
def test_other_encodings_are_refused_in_japanese_and_english(encoded: bytes) -> None:
    with pytest.raises(UnreadableDocumentError) as caught:
        decode_text("memo.txt", encoded)
    message = str(caught.value)
    assert message.startswith("memo.txt: ")
    assert "UTF-8 で保存し直してから" in message and "save the file as UTF-8" in message


# EUC-JP has no FULLWIDTH TILDE / HYPHEN-MINUS: a file converted from Windows holds the wave dash and minus.
EUC_JP_FORMS = str.maketrans({"～": "〜", "－": "−"})


def japanese_samples() -> list[Path]:
    return [p for p in sorted(SAMPLES.iterdir()) if p.name != "README.md"]


@pytest.mark.parametrize("encoding", ["euc_jp", "cp932"])
def test_every_sample_document_and_every_line_of_it_is_read_exactly_in_euc_jp_and_cp932(encoding: str) -> None:
    # Review 1, F4: CP932 was tried first and read EUC-JP as half-width katakana and private-use
    # characters ("了解です" → 'ﾎｻｲ\ue1dbﾇ､ｹ'), stored with a 202; other EUC-JP texts were refused.
    lines = 0
    for path in japanese_samples():
        text = path.read_text(encoding="utf-8")
        if encoding == "euc_jp":
            text = text.translate(EUC_JP_FORMS)
        assert decode_text(path.name, text.encode(encoding)) == text, path.name
        for line in text.splitlines():
            if line.isascii():
                continue
            lines += 1
            assert decode_text(path.name, line.encode(encoding)) == line, (path.name, line)
    assert lines > 250


@pytest.mark.parametrize("text", ["了解です", "# 就業規則（抜粋）", "就業規則", "### 第10条（所定労働時間）"])
@pytest.mark.parametrize("encoding", ["euc_jp", "cp932"])
def test_short_texts_are_read_exactly_in_both_encodings(text: str, encoding: str) -> None:
    assert decode_text("memo.txt", text.encode(encoding)) == text


def test_euc_jp_with_the_nec_row_is_read() -> None:
    text = "①番の申請は㈱サンプル商事の高橋さん〜担当です。№１"  # as EUC-JP-MS / CP51932 writes it
    assert decode_text("memo.txt", text.encode("euc_jis_2004")) == text


@pytest.mark.parametrize(
    "encoded",
    [
        # Korean and Chinese decode as EUC-JP into kanji with not one kana: refused, not stored as that.
        "오늘 회의에서 예산을 논의합니다. 다음 주에 다시 만나서 결정하겠습니다.".encode("euc_kr"),
        "我们今天开会讨论预算然后去吃饭再回家睡觉明天继续工作".encode("gb2312"),
    ],
)
def test_readings_that_are_not_japanese_are_refused_rather_than_stored(encoded: bytes) -> None:
    with pytest.raises(UnreadableDocumentError):
        decode_text("memo.txt", encoded)


def test_the_sample_loader_reads_shift_jis_too(tmp_path: Path) -> None:
    path = tmp_path / "規程.txt"
    path.write_bytes(OFFICE_TEXT.encode("cp932"))
    assert read_text_file(path) == OFFICE_TEXT


@pytest.fixture
def japanese_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN)


@pytest.mark.parametrize("encoding", ["cp932", "euc_jp", "utf-16", "utf-8-sig"])
async def test_an_office_text_file_is_stored_with_its_widths_as_written(
    japanese_settings: Settings, database_url: str, encoding: str
) -> None:
    await create_tables(database_url)
    async with running_app(japanese_settings) as (client, _):
        response = await upload(client, "経費規程.txt", OFFICE_TEXT.encode(encoding))
    assert response.status_code == 202, response.text
    (content,) = (await fetch_all(database_url, "SELECT string_agg(content, '\n') FROM chunks"))[0]
    for written in ("ｶﾀｶﾅ", "（ｿｳﾑﾌﾞ）", "ＡＢＣ１２３", "２５日"):
        assert written in content


@pytest.mark.slow  # over 1 s: the full tier only
async def test_euc_jp_uploads_are_stored_as_written_never_as_mojibake(
    japanese_settings: Settings, database_url: str
) -> None:
    await create_tables(database_url)
    texts = {"了解.txt": "了解です", "規則.md": "# 就業規則（抜粋）"}
    texts.update({p.name: p.read_text(encoding="utf-8").translate(EUC_JP_FORMS) for p in japanese_samples()})
    async with running_app(japanese_settings) as (client, _):
        for name, text in texts.items():
            response = await upload(client, name, text.encode("euc_jp"))
            assert response.status_code == 202, (name, response.text)
    rows = await fetch_all(
        database_url,
        "SELECT d.name, string_agg(c.content, '\n' ORDER BY c.chunk_index) FROM chunks c "
        "JOIN document_sources d ON d.id = c.doc_id GROUP BY d.name",
    )
    stored = dict(rows)
    assert set(stored) == set(texts)
    assert stored["了解.txt"] == "了解です" and stored["規則.md"] == "# 就業規則（抜粋）"
    for name, text in texts.items():
        for line in text.splitlines():
            if line.strip() and not line.isascii():
                assert line.strip() in stored[name], (name, line)  # chunking only cuts and trims
        assert not re.search("[\uff61-\uff65\ue000-\uf8ff]", stored[name]), name  # no mojibake


async def test_a_file_in_another_encoding_is_a_422_in_both_languages(
    japanese_settings: Settings, database_url: str
) -> None:
    await create_tables(database_url)
    async with running_app(japanese_settings) as (client, _):
        response = await upload(client, "note.txt", "Réunion à l'hôtel de ville à midi.".encode("latin-1"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "note.txt" in detail and "UTF-8 で保存" in detail and "save the file as UTF-8" in detail
    assert (await fetch_all(database_url, "SELECT count(*) FROM document_sources"))[0] == (0,)


def test_docx_paragraphs_and_tables_come_out_in_document_order() -> None:
    document = Document()
    document.add_paragraph("就業規則の概要です。")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "項目"
    table.cell(0, 1).text = "内容"
    table.cell(1, 0).text = "始業"
    table.cell(1, 1).paragraphs[0].text = "9時"
    table.cell(1, 1).add_paragraph("（ﾌﾚｯｸｽあり）")
    document.add_paragraph("以上です。\tＡＢＣ")
    out = io.BytesIO()
    document.save(out)
    _, text = extract_text("rules.docx", out.getvalue())
    assert text.splitlines() == [
        "就業規則の概要です。",
        "項目 | 内容",
        "始業 | 9時",
        "（ﾌﾚｯｸｽあり）",
        "以上です。\tＡＢＣ",
    ]
