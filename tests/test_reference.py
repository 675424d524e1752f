"""Batched extraction agrees with the reference (each text alone, unpadded, float32) on every
layer and every pooling, for the bundled model and tiny random models of each architecture."""

from __future__ import annotations

import numpy as np
import pytest

from bertlayers import Extractor, TruncationWarning
from conftest import TINY_ARCHS, Reference
from corpus import long_articles

POOLINGS = ["cls", "mean", "max", "first", "last"]
TOLERANCE = 1e-4


@pytest.fixture(scope="session")
def mixed_texts(review_texts) -> list[str]:
    """Very short, ordinary, long and over-long (truncated) texts, empty and blank ones."""
    articles = long_articles(3)  # 830 to 931 wordpieces each
    return [
        "ok",
        review_texts[0],
        "",
        *review_texts[1:25],
        "   ",
        articles[0],
        "a",
        " ".join(review_texts[30:40]),  # a long but untruncated text
        *articles[1:],
        "Zoë's café — naïve 🙂 façade!",
    ]


@pytest.fixture(scope="session")
def bundled_mixed(bundled, mixed_texts):
    with pytest.warns(TruncationWarning):
        return {p: bundled.extract(mixed_texts, pooling=p, batch_tokens=2048) for p in POOLINGS}


@pytest.fixture(scope="session")
def reference_states(bundled_reference, bundled, mixed_texts):
    max_length = bundled.info.max_length
    return [bundled_reference.hidden(t, max_length=max_length) for t in mixed_texts]


def _pool(states: np.ndarray, special: np.ndarray, pooling: str) -> np.ndarray:
    content = ~special if (~special).any() else np.ones_like(special)
    idx = np.flatnonzero(content)
    return {
        "cls": lambda: states[:, 0],
        "mean": lambda: states[:, idx].mean(axis=1),
        "max": lambda: states[:, idx].max(axis=1),
        "first": lambda: states[:, idx[0]],
        "last": lambda: states[:, idx[-1]],
    }[pooling]()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_bundled_every_layer_every_pooling_matches_reference(
    pooling, bundled_mixed, reference_states, mixed_texts
):
    result = bundled_mixed[pooling]
    assert result.embeddings.shape == (len(mixed_texts), 7, 384)
    assert result.embeddings.dtype == np.float32
    assert result.layers == list(range(7))
    for i, (states, special) in enumerate(reference_states):
        expected = _pool(states, special, pooling)
        diff = np.abs(result.embeddings[i] - expected).max()
        assert diff <= TOLERANCE, f"text {i} ({pooling}): max abs diff {diff}"


def test_truncation_is_counted_and_flagged(bundled_mixed, mixed_texts):
    result = bundled_mixed["mean"]
    long_ids = {i for i, t in enumerate(mixed_texts) if len(t.split()) > 600}
    assert long_ids, "the test needs texts over the limit"
    assert set(np.flatnonzero(result.truncated)) == long_ids
    assert all(result.n_tokens[i] > 512 for i in long_ids)
    assert result.provenance["num_truncated"] == len(long_ids)
    assert "texts" not in result.provenance  # per-text columns are on the result


def test_empty_and_blank_texts_give_the_special_token_vectors(bundled_mixed, mixed_texts):
    """An empty text is [CLS] [SEP]: mean pooling falls back to those two tokens."""
    result = bundled_mixed["mean"]
    empty, blank = mixed_texts.index(""), mixed_texts.index("   ")
    assert result.n_tokens[empty] == 2 and result.n_tokens[blank] == 2
    np.testing.assert_allclose(result.embeddings[empty], result.embeddings[blank], atol=1e-6)
    assert np.isfinite(result.embeddings[empty]).all()


def test_include_special_pools_over_cls_and_sep(bundled, bundled_reference, review_texts):
    texts = review_texts[:6]
    result = bundled.embed(texts, pooling="mean", include_special=True)
    for i, text in enumerate(texts):
        states, _ = bundled_reference.hidden(text)
        assert np.abs(result[i] - states.mean(axis=1)).max() <= TOLERANCE


def test_sentence_pairs_use_segment_b(bundled, bundled_reference, review_texts):
    first, second = review_texts[40:52], review_texts[60:72]
    second[3] = " ".join(review_texts[100:140])  # a pair too long together: truncated
    with pytest.warns(TruncationWarning):
        result = bundled.extract(first, pairs=second, pooling="mean")
    assert result.truncated.tolist() == [i == 3 for i in range(12)]
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        expected = bundled_reference.pooled(a, "mean", pair=b, max_length=512)
        assert np.abs(result.embeddings[i] - expected).max() <= TOLERANCE
    # segment B matters: the same two texts as one segment give other vectors
    joined = bundled.embed([first[0] + " " + second[0]], pooling="mean")
    assert np.abs(joined[0] - result.embeddings[0]).max() > 1e-3


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tiny_architectures_match_reference(arch, tiny_model_dirs, review_texts):
    model_dir = tiny_model_dirs[arch]
    extractor = Extractor(str(model_dir), device="cpu")
    reference = Reference(model_dir)
    assert extractor.info.num_layers == 3
    max_length = extractor.info.max_length
    texts = ["", "word", *review_texts[:10], " ".join(review_texts[10:20])]
    for pooling in POOLINGS:
        with pytest.warns(TruncationWarning):
            result = extractor.extract(texts, pooling=pooling, batch_tokens=256)
        assert result.embeddings.shape == (len(texts), 4, 32)
        assert result.truncated[-1]
        for i, text in enumerate(texts):
            expected = reference.pooled(text, pooling, max_length=max_length)
            diff = np.abs(result.embeddings[i] - expected).max()
            assert diff <= TOLERANCE, f"{arch} text {i} {pooling}: {diff}"
    # pairs, and the layer indexing: layer -1 is the last of 0..3, layer 0 the embeddings
    pairs = review_texts[30:40]
    with pytest.warns(TruncationWarning):
        result = extractor.extract(texts[1:11], pairs=pairs, layers="0,-1", pooling="mean")
    assert result.layers == [0, 3]
    for i, (a, b) in enumerate(zip(texts[1:11], pairs, strict=True)):
        expected = reference.pooled(a, "mean", pair=b, max_length=max_length)[[0, 3]]
        assert np.abs(result.embeddings[i] - expected).max() <= TOLERANCE


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_long_texts_in_windows_match_the_reference_with_every_pooling(
    arch, tiny_model_dirs, review_texts
):
    """`long='split'` on texts of 0 to ~280 tokens (up to 10 windows of a tiny model's 40),
    every pooling, special tokens in and out, two strides: each window run alone."""
    extractor = Extractor(str(tiny_model_dirs[arch]), device="cpu")
    reference = Reference(tiny_model_dirs[arch])
    max_length = extractor.info.max_length
    texts = ["", "word", review_texts[5], " ".join(review_texts[:3]), " ".join(review_texts[:12])]
    for stride, include_special in ((None, False), (5, True)):
        expected = [
            reference.windowed(t, max_length, stride, include_special=include_special)
            for t in texts
        ]
        assert max(windows for _, windows in expected) >= 5
        for pooling in POOLINGS:
            result = extractor.extract(
                texts,
                long="split",
                stride=stride,
                pooling=pooling,
                include_special=include_special,
                batch_tokens=200,
            )
            assert result.windows.tolist() == [windows for _, windows in expected]
            assert not result.truncated.any()
            for i, (vectors, _) in enumerate(expected):
                diff = np.abs(result.embeddings[i] - vectors[pooling]).max()
                assert diff <= TOLERANCE, f"{arch} text {i} {pooling} {stride}: {diff}"


def test_bundled_long_article_in_windows_matches_the_reference_with_every_pooling(
    bundled, bundled_reference
):
    """An article of 929 wordpieces in windows of 510 (three of them), beside a short text:
    the five poolings as jobs of one engine call, sharing its forward passes."""
    from bertlayers import ExtractConfig
    from bertlayers.io.readers import records_from_texts

    texts = [long_articles(1)[0], "A short text after the long one."]
    expected = [bundled_reference.windowed(t, bundled.info.max_length) for t in texts]
    assert [count for _, count in expected] == [3, 1]
    records = list(records_from_texts(texts))
    jobs = [(records, ExtractConfig(long="split", pooling=p, layers="all")) for p in POOLINGS]
    for pooling, results in zip(POOLINGS, bundled.engine.embed_many(jobs), strict=True):
        assert [r.windows for r in results] == [3, 1]
        for i, (vectors, _) in enumerate(expected):
            diff = np.abs(results[i].vectors - vectors[pooling]).max()
            assert diff <= TOLERANCE, f"text {i} {pooling}: {diff}"


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("layers", ["0", "1", "0:2"])
def test_early_exit_layers_equal_the_full_run(arch, layers, tiny_model_dirs, review_texts):
    """Stopping at the deepest requested layer changes nothing (ModernBERT's final norm too)."""
    extractor = Extractor(str(tiny_model_dirs[arch]), device="cpu")
    texts = [*review_texts[:7], " ".join(review_texts[7:10])]  # the last one truncated
    kwargs = {"pooling": "mean", "max_length": 32}
    with pytest.warns(TruncationWarning):
        full = extractor.extract(texts, layers="all", **kwargs)
        part = extractor.extract(texts, layers=layers, **kwargs)
    np.testing.assert_allclose(part.embeddings, full.embeddings[:, part.layers], atol=1e-5)


def test_only_layers_up_to_the_deepest_are_computed(tiny_model_dirs, monkeypatch):
    """transformers' model (the native port's early exit: tests/test_native.py)."""
    monkeypatch.setenv("BERTLAYERS_FORWARD", "transformers")
    extractor = Extractor(str(tiny_model_dirs["bert"]), device="cpu")
    calls = []
    layers = extractor.encoder.model.encoder.layer
    hooks = [m.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, m in enumerate(layers)]
    try:
        extractor.embed(["one text", "and another"], layers="0,1")
        assert calls == [0]
        calls.clear()
        extractor.embed(["one text"], layers="-2")
        assert calls == [0, 1]
        calls.clear()
        extractor.embed(["one text"], layers="all")
        assert calls == [0, 1, 2]
    finally:
        for hook in hooks:
            hook.remove()
