"""Japanese-aware chunking: normalization, sentence boundaries, packing, overlap, limits, no text lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modules.knowledge.chunking import (
    Chunk,
    ChunkingOptions,
    normalize_text,
    split_into_chunks,
    split_sentences,
    split_with_offsets,
)
from modules.text import estimate_tokens

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_PATHS = sorted(
    path for path in SAMPLES_DIR.iterdir() if path.suffix in (".md", ".txt") and path.stem != "README"
)

OPTION_SETS = [
    ChunkingOptions(),
    ChunkingOptions(target_chars=200, overlap_chars=80),
    ChunkingOptions(target_chars=120, overlap_chars=100),
    ChunkingOptions(target_chars=60, overlap_chars=20, max_tokens=30),
    ChunkingOptions(target_chars=500, overlap_chars=0, max_tokens=40),
]


def small(target: int, overlap: int = 0, max_tokens: int = 2048) -> ChunkingOptions:
    return ChunkingOptions(target_chars=target, overlap_chars=overlap, max_tokens=max_tokens)


def sentence_offsets(normalized: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of an already-normalized text."""
    offsets = []
    position = 0
    for sentence in split_sentences(normalized):
        start = normalized.index(sentence, position)
        position = start + len(sentence)
        offsets.append((start, position))
    return offsets


def without_whitespace(text: str) -> str:
    return re.sub(r"\s", "", text)


# --- Options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "overlap", "max_tokens"),
    [(0, 0, 10), (-5, 0, 10), (10, 10, 10), (10, 11, 10), (10, -1, 10), (10, 2, 0)],
)
def test_invalid_options_are_refused(target: int, overlap: int, max_tokens: int) -> None:
    with pytest.raises(ValueError):
        ChunkingOptions(target_chars=target, overlap_chars=overlap, max_tokens=max_tokens)


def test_default_options() -> None:
    assert ChunkingOptions() == ChunkingOptions(target_chars=500, overlap_chars=50, max_tokens=2048)


# --- Normalization -----------------------------------------------------------------------------------


def test_line_endings_become_lf() -> None:
    assert normalize_text("一行目\r\n二行目\r三行目\n四行目") == "一行目\n二行目\n三行目\n四行目"


def test_form_feed_and_unicode_line_separators_become_newlines() -> None:
    assert normalize_text("page1\x0cpage2\u2028line\u2029para\x85end") == "page1\npage2\nline\npara\nend"


def test_nul_and_control_characters_are_removed_but_tab_is_kept() -> None:
    assert normalize_text("\ufeff経\x00費\x07精\x1b算\x7f\x9b\tOK") == "経費精算\tOK"


def test_lone_surrogates_become_replacement_characters() -> None:
    assert normalize_text("a\ud800b\udc00c") == "a\ufffdb\ufffdc"
    assert normalize_text("末尾\udbff") == "末尾\ufffd"


def test_surrogate_pair_stored_as_two_code_points_is_joined() -> None:
    assert normalize_text("絵文字\ud83d\ude00です") == "絵文字\U0001f600です"


def test_normalized_text_encodes_as_utf8() -> None:
    normalize_text("x\ud800\x00y\udfff").encode("utf-8")  # would raise on a surrogate left behind


def test_nfc_composes_decomposed_kana() -> None:
    assert normalize_text("か\u3099いしゃ") == "がいしゃ"  # macOS-style decomposed "が"


def test_nfkc_is_not_applied() -> None:
    text = "全角ＡＢＣ１２３！ ① ㈱ ｶﾀｶﾅ"
    assert normalize_text(text) == text


def test_cjk_compatibility_ideographs_are_kept() -> None:
    assert normalize_text("\ufa10本さん\u304b\u3099") == "\ufa10本さんが"


def test_trailing_whitespace_is_stripped_and_blank_lines_collapsed() -> None:
    text = "\n\n見出し  \t\u3000\n\n\n\n本文です。   \n \n\u3000\n\n次の段落。\n\n\n"
    assert normalize_text(text) == "見出し\n\n本文です。\n\n次の段落。"


def test_single_blank_line_and_leading_indentation_are_kept() -> None:
    assert normalize_text("段落一。\n\n\u3000段落二。\n  - 項目") == "段落一。\n\n\u3000段落二。\n  - 項目"


def test_normalization_is_idempotent() -> None:
    messy = "\ufeffA\r\n\r\n\r\n\x00B\ud800  \n\u3000\nか\u3099\x0c\n\n\n\nC\t \r"
    once = normalize_text(messy)
    assert normalize_text(once) == once
    for path in SAMPLE_PATHS:
        text = normalize_text(path.read_text(encoding="utf-8"))
        assert normalize_text(text) == text


# --- Sentences ---------------------------------------------------------------------------------------


def test_japanese_sentence_ends() -> None:
    assert split_sentences("はい。そうです！本当ですか？ＯＫ．次｡") == [
        "はい。",
        "そうです！",
        "本当ですか？",
        "ＯＫ．",
        "次｡",
    ]


def test_runs_of_terminators_stay_together() -> None:
    assert split_sentences("本当？！すごい!!えっ。。。") == ["本当？！", "すごい!!", "えっ。。。"]


def test_closing_brackets_stay_with_their_sentence() -> None:
    text = '（注：雨天中止。）「はい。」『了解！』そうですか。He said "stop." Then left.'
    assert split_sentences(text) == [
        "（注：雨天中止。）",
        "「はい。」",
        "『了解！』",
        "そうですか。",
        'He said "stop."',
        "Then left.",
    ]


def test_quoted_sentence_followed_by_to_continues() -> None:
    text = "彼は「行きます。」と言った。「無理！」って思った。"
    assert split_sentences(text) == ["彼は「行きます。」と言った。", "「無理！」って思った。"]


def test_decimal_numbers_and_domains_are_not_split() -> None:
    text = "円周率は3.14です。version 2.0.1 を example.com で配布。全角の３．１４も数。Pi is 3.14 here. Done."
    assert split_sentences(text) == [
        "円周率は3.14です。",
        "version 2.0.1 を example.com で配布。",
        "全角の３．１４も数。",
        "Pi is 3.14 here.",
        "Done.",
    ]


def test_urls_are_not_split() -> None:
    url = "https://example.com/v1.2/help?topic=vpn&lang=ja!new"
    assert split_sentences(f"詳しくは {url} を見てください。次の文です。") == [
        f"詳しくは {url} を見てください。",
        "次の文です。",
    ]
    assert split_sentences("資料（https://intra.example.com/a.b/c?x=1）を参照。") == [
        "資料（https://intra.example.com/a.b/c?x=1）を参照。"
    ]


def test_a_url_at_the_end_of_a_sentence_keeps_the_period_as_a_sentence_end() -> None:
    assert split_sentences("See https://example.com/faq. Next one.") == ["See https://example.com/faq.", "Next one."]


def test_newlines_end_sentences_and_list_markers_are_not_sentences() -> None:
    text = "# 見出し\n1. はじめに\n## 2. 概要\nQ1．パスワードを忘れました。\nA. 再設定してください。"
    assert split_sentences(text) == [
        "# 見出し",
        "1. はじめに",
        "## 2. 概要",
        "Q1．パスワードを忘れました。",
        "A. 再設定してください。",
    ]


# --- Chunks ------------------------------------------------------------------------------------------


def test_empty_and_blank_text_give_no_chunks() -> None:
    assert split_into_chunks("") == []
    assert split_into_chunks(" \n\u3000\t\r\n") == []
    assert split_into_chunks("\x00\x01\ufeff") == []
    assert split_with_offsets("") == []


def test_short_text_is_one_chunk() -> None:
    assert split_into_chunks("  経費精算の締め日は月末です。  \r\n") == ["経費精算の締め日は月末です。"]


def test_sentences_packed_with_whole_sentence_overlap_exact() -> None:
    text = "今日は晴れです。明日は雨でしょう。週末は「出かけたい！」と思います。円周率は3.14です。"
    assert split_into_chunks(text, small(30, overlap=10)) == [
        "今日は晴れです。明日は雨でしょう。",
        "明日は雨でしょう。週末は「出かけたい！」と思います。",  # overlap: the 9-char sentence
        "円周率は3.14です。",  # no overlap: the previous last sentence (17 chars) is over 10
    ]


def test_overlap_takes_as_many_whole_trailing_sentences_as_fit() -> None:
    text = "あいう。かきく。さしす。たちつ。なにぬ。はひふ。"  # six 4-char sentences
    chunks = split_with_offsets(text, small(12, overlap=8))
    assert [chunk.text for chunk in chunks] == [
        "あいう。かきく。さしす。",
        "かきく。さしす。たちつ。",
        "さしす。たちつ。なにぬ。",
        "たちつ。なにぬ。はひふ。",
    ]
    assert [chunk.overlap for chunk in chunks] == [0, 8, 8, 8]


def test_overlap_is_never_a_partial_sentence() -> None:
    text = "これは二十文字ちょうどの長さがある文。短い文。"
    chunks = split_into_chunks(text, small(22, overlap=10))
    assert chunks == ["これは二十文字ちょうどの長さがある文。", "短い文。"]


def test_zero_overlap() -> None:
    text = "あいう。かきく。さしす。たちつ。"
    assert split_into_chunks(text, small(8)) == ["あいう。かきく。", "さしす。たちつ。"]


def test_overlong_sentence_is_cut_after_commas() -> None:
    text = "これは、とても、長い、文で、句点が、ありません、でも、読点は、あります"
    assert split_into_chunks(text, small(12)) == [
        "これは、とても、長い、",
        "文で、句点が、",
        "ありません、でも、",
        "読点は、あります",
    ]


def test_overlong_sentence_without_commas_is_cut_at_spaces_then_hard() -> None:
    assert split_into_chunks("alpha beta gamma delta epsilon", small(12)) == ["alpha beta", "gamma delta", "epsilon"]
    assert split_into_chunks("あ" * 25, small(10)) == ["あ" * 10, "あ" * 10, "あ" * 5]


def test_pieces_of_an_overlong_sentence_are_not_used_as_overlap() -> None:
    text = "前置き。" + "長" * 30 + "。後の文。"
    chunks = split_with_offsets(text, small(20, overlap=8))
    assert [chunk.text for chunk in chunks] == ["前置き。", "長" * 20, "長" * 10 + "。後の文。"]
    assert [chunk.overlap for chunk in chunks] == [0, 0, 0]


def test_overlong_sentence_is_not_cut_inside_a_url() -> None:
    url = "https://example.com/abcdefghij"
    text = "あ" * 20 + url + "い" * 5
    assert split_into_chunks(text, small(30)) == ["あ" * 20, url, "い" * 5]


def test_hard_cut_keeps_a_kanji_with_its_variation_selector() -> None:
    ivs = "葛\U000e0100"  # a kanji with an ideographic variation selector
    text = "あ" * 9 + ivs + "い" * 5
    chunks = split_into_chunks(text, small(10))
    assert chunks == ["あ" * 9, ivs + "い" * 5]


def test_no_chunk_exceeds_a_tiny_max_tokens() -> None:
    text = "経費精算の締め日は月末の3営業日前です。Expense Hub から申請してください。" * 5
    options = small(200, overlap=20, max_tokens=12)
    chunks = split_into_chunks(text, options)
    assert chunks
    assert all(estimate_tokens(chunk) <= 12 for chunk in chunks)
    assert without_whitespace("".join(c.text[c.overlap :] for c in split_with_offsets(text, options))) == (
        without_whitespace(normalize_text(text))
    )


def test_max_tokens_of_one_still_makes_progress() -> None:
    chunks = split_into_chunks("あいう abc", small(50, max_tokens=1))
    assert chunks == ["あ", "い", "う", "abc"]  # "abc" is one token by the estimate


def test_a_heading_never_ends_a_chunk_and_starts_without_overlap() -> None:
    text = "第一段落の文です。もう一つの文です。\n\n## 次の節\n\n節の本文です。"
    chunks = split_with_offsets(text, small(30, overlap=10))
    assert [chunk.text for chunk in chunks] == ["第一段落の文です。もう一つの文です。", "## 次の節\n\n節の本文です。"]
    assert chunks[1].overlap == 0


def test_chunk_prefers_ending_at_a_paragraph_break() -> None:
    text = "一つ目の段落の文です。続きの文です。\n\n二つ目の段落。まだ続く文です。"
    assert len(normalize_text(text)) > 30
    assert split_into_chunks(text, small(30)) == [  # greedy would end after "二つ目の段落。"
        "一つ目の段落の文です。続きの文です。",
        "二つ目の段落。まだ続く文です。",
    ]


def test_chunks_are_deterministic() -> None:
    text = "\n\n".join(path.read_text(encoding="utf-8") for path in SAMPLE_PATHS)
    for options in OPTION_SETS:
        first = split_into_chunks(text, options)
        assert split_into_chunks(text, options) == first
        assert split_into_chunks(
            text, ChunkingOptions(options.target_chars, options.overlap_chars, options.max_tokens)
        ) == (first)


# --- Properties over the sample documents ------------------------------------------------------------


def check_chunk_invariants(text: str, options: ChunkingOptions) -> list[Chunk]:
    normalized = normalize_text(text)
    chunks = split_with_offsets(text, options)
    assert [chunk.text for chunk in chunks] == split_into_chunks(text, options)
    position = 0  # how far the new content of the chunks covers `normalized`
    for index, chunk in enumerate(chunks):
        assert chunk.text == normalized[chunk.start : chunk.end]
        assert chunk.text.strip() == chunk.text != ""
        assert len(chunk.text) <= options.target_chars
        assert estimate_tokens(chunk.text) <= options.max_tokens
        new_start = chunk.start + chunk.overlap
        assert normalized[position:new_start].strip() == "", "text lost between chunks"
        assert new_start < chunk.end
        if index == 0:
            assert chunk.overlap == 0
        elif chunk.overlap:
            previous = chunks[index - 1]
            assert previous.start < chunk.start < previous.end, "the overlap comes from the previous chunk"
            assert previous.text.endswith(chunk.text[: chunk.overlap].rstrip())
            assert len(chunk.text[: chunk.overlap].rstrip()) <= options.overlap_chars
        position = chunk.end
    assert normalized[position:].strip() == "", "text lost after the last chunk"
    new_parts = "".join(chunk.text[chunk.overlap :] for chunk in chunks)
    assert without_whitespace(new_parts) == without_whitespace(normalized)
    return chunks


def test_samples_exist_and_are_the_promised_size() -> None:
    assert 4 <= len(SAMPLE_PATHS) <= 5
    for path in SAMPLE_PATHS:
        text = path.read_text(encoding="utf-8")
        japanese = re.findall("[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]", text)
        assert len(japanese) >= 2000 and len(text) <= 5000, path.name


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=lambda path: path.stem)
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: f"{o.target_chars}-{o.overlap_chars}-{o.max_tokens}")
def test_no_text_is_lost_and_limits_hold_on_samples(path: Path, options: ChunkingOptions) -> None:
    chunks = check_chunk_invariants(path.read_text(encoding="utf-8"), options)
    assert len(chunks) >= 2


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=lambda path: path.stem)
def test_sample_chunks_start_and_end_on_sentence_boundaries(path: Path) -> None:
    normalized = normalize_text(path.read_text(encoding="utf-8"))
    sentences = sentence_offsets(normalized)
    starts = {start for start, _ in sentences}
    ends = {end for _, end in sentences}
    options = ChunkingOptions(target_chars=300, overlap_chars=120)
    assert max(end - start for start, end in sentences) <= options.target_chars  # so no sentence needs cutting
    chunks = split_with_offsets(normalized, options)
    assert any(chunk.overlap for chunk in chunks)
    for chunk in chunks:
        assert chunk.start in starts
        assert chunk.start + chunk.overlap in starts, "the overlap is whole sentences"
        assert chunk.end in ends


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=lambda path: path.stem)
def test_sample_chunks_never_end_on_a_markdown_heading(path: Path) -> None:
    for chunk in split_into_chunks(path.read_text(encoding="utf-8"))[:-1]:
        assert not re.match(r"#{1,6}\s", chunk.splitlines()[-1]), chunk


def test_messy_input_keeps_every_character() -> None:
    text = "\ufeff# 題\r\n\r\n\r\n本文。\x00NUL の後。\ud800孤立サロゲート。\r\n" + "長い、" * 40 + "終わり。"
    check_chunk_invariants(text, small(50, overlap=10, max_tokens=40))
