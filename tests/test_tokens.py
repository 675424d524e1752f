"""Token- and word-level output, and texts of any length, against the reference."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import torch

import corpus
from bertlayers import Extractor, TruncationWarning
from bertlayers.core.windows import plan_windows, window_owners
from bertlayers.errors import InputError, OptionError
from conftest import Reference

TOLERANCE = 1e-4


def maxdiff(got: np.ndarray, expected: np.ndarray) -> float:
    """Max abs difference of two arrays of the same shape (0 for empty ones)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float(np.abs(got - expected).max()) if got.size else 0.0


@pytest.fixture(scope="module")
def short_texts(review_texts) -> list[str]:
    return ["", "Hi!", "Zoë's café — naïve 🙂 façade!", *review_texts[:12]]


@pytest.fixture(scope="module")
def long_articles() -> list[str]:
    return corpus.long_articles(3)  # 830 to 931 wordpieces each


def _normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def test_token_level_matches_reference_every_layer(bundled, bundled_reference, short_texts):
    result = bundled.extract_tokens(short_texts, layers="all")
    assert len(result) == len(short_texts)
    for i, text in enumerate(short_texts):
        states, special = bundled_reference.hidden(text)
        expected = states[:, ~special].transpose(1, 0, 2)  # (T, L+1, H)
        item = result[i]
        assert item.vectors.shape == expected.shape
        assert maxdiff(item.vectors, expected) <= TOLERANCE
        ids = bundled_reference.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert item.items == bundled_reference.tokenizer.convert_ids_to_tokens(ids)
        # spans point at the token's characters in the original text (uncased: lowercased,
        # accents stripped by the normaliser)
        for token, (start, end) in zip(item.items, item.spans, strict=True):
            if token != "[UNK]":
                assert _normalise(text[start:end]) == token.removeprefix("##")


def test_token_level_with_special_tokens(bundled, bundled_reference, short_texts):
    result = bundled.extract_tokens(short_texts[:4], layers="0,-1", include_special=True)
    for i, text in enumerate(short_texts[:4]):
        states, _ = bundled_reference.hidden(text)
        assert result[i].items[0] == "[CLS]" and result[i].items[-1] == "[SEP]"
        assert maxdiff(result[i].vectors, states[[0, 6]].transpose(1, 0, 2)) <= TOLERANCE


@pytest.mark.parametrize("arch", ["roberta", "deberta-v2", "xlm-roberta", "modernbert"])
def test_token_level_other_tokenizers(arch, tiny_model_dirs, review_texts):
    extractor = Extractor(str(tiny_model_dirs[arch]), device="cpu")
    reference = Reference(tiny_model_dirs[arch])
    texts = ["", "one", *[t[:80] for t in review_texts[:8]]]
    result = extractor.extract_tokens(texts, layers="all", long="truncate")
    for i, text in enumerate(texts):
        states, special = reference.hidden(text, max_length=extractor.info.max_length)
        expected = states[:, ~special].transpose(1, 0, 2)
        assert maxdiff(result[i].vectors, expected) <= TOLERANCE, f"{arch} text {i}"


def _reference_words(reference: Reference, text=None, words=None, mode="first"):
    """A plain per-word loop over the reference's token vectors."""
    tokenizer = reference.tokenizer
    if words is None:
        enc = tokenizer(text, add_special_tokens=False)
    else:
        enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    states, special = reference.hidden(text if words is None else " ".join(words))
    tokens = states[:, ~special].transpose(1, 0, 2)  # (T, K, H)
    word_ids = enc.word_ids()
    out = []
    for word in sorted(set(word_ids)):
        rows = [t for t, w in enumerate(word_ids) if w == word]
        vecs = tokens[rows]
        out.append(
            {"first": vecs[0], "last": vecs[-1], "mean": vecs.mean(0), "max": vecs.max(0)}[mode]
        )
    return np.stack(out) if out else np.zeros((0, *tokens.shape[1:]))


@pytest.mark.parametrize("mode", ["first", "mean", "last", "max"])
def test_word_level_equals_a_per_word_loop(mode, bundled, bundled_reference, short_texts):
    texts = short_texts[1:10]
    result = bundled.extract_words(texts, layers="all", word_pooling=mode)
    for i, text in enumerate(texts):
        expected = _reference_words(bundled_reference, text=text, mode=mode)
        assert result[i].vectors.shape == expected.shape
        assert maxdiff(result[i].vectors, expected) <= TOLERANCE
        for word, (start, end) in zip(result[i].items, result[i].spans, strict=True):
            assert text[start:end] == word


def test_pre_split_words_each_get_one_vector(bundled, bundled_reference):
    words = [["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]]
    result = bundled.extract_words(words, layers="all", word_pooling="mean")
    assert result[0].items == words[0]
    expected = _reference_words(bundled_reference, words=words[0], mode="mean")
    assert maxdiff(result[0].vectors, expected) <= TOLERANCE
    joined = " ".join(words[0])
    assert [joined[a:b] for a, b in result[0].spans] == words[0]


@pytest.mark.parametrize("arch", ["roberta", "xlm-roberta", "deberta-v2"])
def test_word_level_on_byte_level_bpe_and_unigram_tokenizers(arch, tiny_model_dirs, review_texts):
    """Raw text (the tokenizer's own words) and pre-split words, every word pooling, against
    each text run alone: byte-level BPE (RoBERTa: pre-split words get the space that precedes
    them in running text) and Unigram with a metaspace (XLM-R, DeBERTa-v2)."""
    extractor = Extractor(str(tiny_model_dirs[arch]), device="cpu")
    reference = Reference(tiny_model_dirs[arch])
    limit = extractor.info.max_length

    def fits(n_tokens: int) -> bool:
        return n_tokens <= limit

    texts = ["", "one", "Zoë's café — naïve, 3.5/5!", *review_texts[:20]]
    texts = [t for t in texts if fits(len(reference.tokenizer(t)["input_ids"]))][:10]
    sentences = [[w for w, _ in s] for s in corpus.tagged_sentences()]
    words = [
        s
        for s in sentences
        if fits(len(reference.words_tokenizer(s, is_split_into_words=True)["input_ids"]))
    ]
    assert len(texts) >= 8 and len(words) >= 30
    assert any("'s" in s or "n't" in s for s in words)  # pieces that glue to the word before
    raw_expected = [reference.words(text=text) for text in texts]
    split_expected = [reference.words(words=sentence) for sentence in words]
    for mode in ("first", "last", "mean", "max"):
        raw = extractor.extract_words(texts, layers="all", word_pooling=mode)
        split = extractor.extract_words(words, layers="all", word_pooling=mode)
        for i, text in enumerate(texts):
            got, expected = raw[i].vectors, raw_expected[i][mode]
            assert maxdiff(got, expected) <= TOLERANCE, f"{arch} {mode} text {i}"
            assert [text[a:b] for a, b in raw[i].spans] == raw[i].items
        for i, sentence in enumerate(words):
            got, expected = split[i].vectors, split_expected[i][mode]
            assert split[i].items == sentence
            assert maxdiff(got, expected) <= TOLERANCE, f"{arch} {mode} words {i}"


def test_every_word_of_the_conll_file_gets_a_vector(bundled):
    from bertlayers.io.readers import read_records

    path = corpus.TAGGED
    records = list(read_records(str(path)))
    lines = [line for line in path.read_text(encoding="utf-8").splitlines()]
    words_in_file = [line.split("\t")[0] for line in lines if line.strip()]
    assert sum(len(r.words) for r in records) == len(words_in_file)
    result = bundled.extract_words(records, layers=-1, word_pooling="first")
    assert len(result) == len(records)
    assert result.vectors.shape == (len(words_in_file), 1, 384)
    assert result.items == words_in_file
    assert np.isfinite(result.vectors).all()
    assert np.diff(result.offsets).tolist() == [len(r.words) for r in records]


WEIRD = [
    "zero\u200dwidth joiner",
    "\u200d",
    "emoji 🙂🎉 only",
    "line\u2028separator",
    "combining e\u0301 accents",
    "中文字符测试",
    "مرحبا بالعالم",
    "x" * 10_000,
    "?!...;;",
    "   \t  ",
]


def test_weird_texts_run_through_token_and_word_level(bundled):
    tokens = bundled.extract_tokens(WEIRD, layers="0,-1")
    words = bundled.extract_words(WEIRD, layers="0,-1")
    assert len(tokens) == len(words) == len(WEIRD)
    assert np.isfinite(tokens.vectors).all() and np.isfinite(words.vectors).all()
    by_text = dict(zip(WEIRD, tokens, strict=True))
    assert len(by_text["\u200d"].items) == 0  # removed by the normaliser: no token, no word
    assert len(by_text["   \t  "].items) == 0
    assert by_text["x" * 10_000].items == ["[UNK]"]  # WordPiece: words over 100 chars are [UNK]
    cjk = by_text["中文字符测试"]  # CJK: a token per character ([UNK] where not in the vocab)
    assert [("中文字符测试"[a:b], t) for (a, b), t in zip(cjk.spans, cjk.items, strict=True)] == [
        (c, c if c in "中文" else "[UNK]") for c in "中文字符测试"
    ]
    assert "[UNK]" in by_text["emoji 🙂🎉 only"].items
    assert by_text["combining e\u0301 accents"].items[1] == "e"  # accents stripped (uncased)


def test_pre_split_words_with_no_token_are_flagged(bundled):
    words = [["a", "\u200d", "", "b"]]
    with pytest.warns(UserWarning, match="2 words gave no token"):
        result = bundled.extract_words(words, layers=-1)
    assert result[0].items == words[0]
    assert result.vectors.shape == (4, 1, 384)
    assert result.provenance["replaced_words"] == [["0", 1], ["0", 2]]


def test_long_split_gives_one_vector_per_token_of_the_full_text(bundled, long_articles):
    result = bundled.extract_tokens(long_articles, layers="all")
    tokenizer = bundled.encoder.tokenizer
    for i, text in enumerate(long_articles):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > 600
        assert result[i].items == tokenizer.convert_ids_to_tokens(ids)
        assert result.n_tokens[i] == len(ids) + 2
        assert not result.truncated[i]
    assert all(w > 1 for w in result.windows)


def test_split_equals_the_plain_result_for_short_texts(bundled, short_texts):
    plain = bundled.extract_tokens(short_texts, layers="all", long="truncate")
    for stride in (0, 50, 300):
        split = bundled.extract_tokens(short_texts, layers="all", long="split", stride=stride)
        np.testing.assert_array_equal(split.vectors, plain.vectors)
    sentence_split = bundled.embed(short_texts, long="split", pooling="mean")
    sentence_plain = bundled.embed(short_texts, pooling="mean")
    assert maxdiff(sentence_split, sentence_plain) <= TOLERANCE
    cls_split = bundled.embed(short_texts, long="split", pooling="cls")
    assert maxdiff(cls_split, bundled.embed(short_texts, pooling="cls")) <= TOLERANCE


@torch.inference_mode()
def test_window_vectors_agree_with_the_reference_on_their_window(
    bundled, bundled_reference, long_articles
):
    text = max(long_articles, key=len)
    stride = 100
    result = bundled.extract_tokens([text], layers="all", stride=stride)
    tokenizer = bundled_reference.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = plan_windows(len(ids), 510, stride)
    owners = window_owners(len(ids), windows)
    assert len(windows) >= 2
    window_cls = []
    for w, (start, end) in enumerate(windows):
        window_ids = torch.tensor(
            [[tokenizer.cls_token_id, *ids[start:end], tokenizer.sep_token_id]]
        )
        out = bundled_reference.model(input_ids=window_ids, output_hidden_states=True)
        states = torch.stack(out.hidden_states)[:, 0].numpy()  # (L+1, T, H)
        window_cls.append(states[:, 0])
        owned = np.flatnonzero(owners[start:end] == w)
        expected = states[:, 1 + owned].transpose(1, 0, 2)
        got = result[0].vectors[start + owned]
        assert maxdiff(got, expected) <= TOLERANCE, f"window {w}"
    # sentence pooling over stitched tokens; cls = mean of the windows' [CLS] vectors
    mean = bundled.embed([text], long="split", stride=stride, pooling="mean")[0]
    assert maxdiff(mean, result[0].vectors.mean(axis=0)) <= TOLERANCE
    cls = bundled.embed([text], long="split", stride=stride, pooling="cls")[0]
    assert maxdiff(cls, np.mean(window_cls, axis=0)) <= TOLERANCE


def test_window_plan_and_owners():
    assert plan_windows(10, 10, 3) == [(0, 10)]
    assert plan_windows(25, 10, 2) == [(0, 10), (8, 18), (15, 25)]
    owners = window_owners(25, plan_windows(25, 10, 2))
    assert owners.tolist() == [0] * 9 + [1] * 8 + [2] * 8
    with pytest.raises(OptionError, match="stride 10 must"):
        plan_windows(30, 10, 10)


def test_long_error_and_truncate(bundled, long_articles):
    with pytest.raises(InputError, match=r"record 1 has \d+ tokens, over the limit of 512"):
        bundled.extract_tokens(["short", long_articles[0]], long="error")
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        result = bundled.extract_tokens(["short", long_articles[0]], long="truncate", layers=-1)
    assert len(result[1].items) == 510 and result.truncated.tolist() == [False, True]
    with pytest.raises(OptionError, match="sentence pairs are embedded at sentence level"):
        bundled.extract(["a"], pairs=["b"], long="split")


def test_token_results_do_not_depend_on_batching(bundled, short_texts, long_articles):
    texts = [*short_texts, long_articles[1]]
    base = bundled.extract_tokens(texts, layers="0,3,-1")
    for options in (
        {"batch_tokens": 600},
        {"max_batch_size": 1},
        {"chunk_bytes": 1, "chunk_size": 3},
    ):
        other = bundled.extract_tokens(texts, layers="0,3,-1", **options)
        assert maxdiff(other.vectors, base.vectors) <= TOLERANCE
        np.testing.assert_array_equal(other.offsets, base.offsets)


def test_bad_level_options(bundled):
    with pytest.raises(OptionError, match="valid long modes are: split, truncate, error"):
        bundled.extract_tokens(["a"], long="x")
    with pytest.raises(OptionError, match="valid level modes are: sentence, token, word"):
        from bertlayers import ExtractConfig

        ExtractConfig(level="paragraph")
    with pytest.raises(OptionError, match="the level is set by the method"):
        bundled.embed(["a"], level="token")
