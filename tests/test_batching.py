"""Batch composition, order and the token budget never change results; order equals input."""

from __future__ import annotations

import numpy as np
import pytest

from bertlayers.core.batching import plan_batches
from bertlayers.errors import OptionError
from bertlayers.io.readers import Record


def test_plan_batches_covers_every_text_once_under_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 512, size=1000)
    batches = plan_batches(lengths, batch_tokens=4096, max_batch_size=64, max_padding=0.2)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(1000))
    for rows in batches:
        width = lengths[rows].max()
        assert len(rows) <= 64
        assert len(rows) * width <= 4096 or len(rows) == 1
        if len(rows) > 1 and len(rows) * width > 0.25 * 4096:  # past min_fill: capped
            assert 1 - lengths[rows].sum() / (len(rows) * width) <= 0.2
    strict = plan_batches(lengths, 4096, 64, max_padding=0.2, min_fill=0)
    for rows in strict:
        if len(rows) > 1:
            assert 1 - lengths[rows].sum() / (len(rows) * lengths[rows].max()) <= 0.2


def test_a_few_texts_of_unlike_lengths_share_a_batch_until_it_is_a_quarter_full():
    """A service's small rounds: not one tiny batch per length."""
    lengths = np.array([40, 31, 22, 13, 9, 6])
    assert len(plan_batches(lengths, 1024, 256, max_padding=0.05, min_fill=0)) == 6
    assert [len(b) for b in plan_batches(lengths, 1024, 256, max_padding=0.05)] == [6]
    big = np.array([200, 150, 100, 60])  # 4 x 200 = 800 tokens > 256: the cap applies
    assert len(plan_batches(big, 1024, 256, max_padding=0.05)) > 1


def test_one_text_longer_than_the_budget_gets_a_batch_of_its_own():
    batches = plan_batches(np.array([10, 600, 12]), batch_tokens=100, max_batch_size=8)
    assert [b.tolist() for b in batches] == [[1], [2, 0]]


@pytest.fixture(scope="module")
def texts(review_texts):
    # corpus order mixes lengths; add duplicates and an empty text
    return [*review_texts[:150], "", review_texts[3], "short one"]


def test_results_do_not_depend_on_batching(bundled, texts):
    base = bundled.extract(texts, layers="all", pooling="mean")
    assert base.ids == [str(i) for i in range(len(texts))]
    for options in (
        {"batch_tokens": 64},
        {"batch_tokens": 100_000, "max_batch_size": 1000, "max_padding": 1.0},
        {"max_batch_size": 1},
        {"chunk_size": 7},
        {"max_padding": 0.0},
    ):
        other = bundled.extract(texts, layers="all", pooling="mean", **options)
        assert other.ids == base.ids
        diff = np.abs(other.embeddings - base.embeddings).max()
        assert diff <= 1e-4, f"{options}: {diff}"
    # the duplicate text gets the same vector as its first occurrence
    np.testing.assert_allclose(base.embeddings[151], base.embeddings[3], atol=1e-5)


def test_output_order_equals_input_order(bundled, texts):
    forward = bundled.embed(texts, layers=-1, pooling="cls")
    backward = bundled.embed(texts[::-1], layers=-1, pooling="cls")
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-4)


def test_records_keep_their_ids(bundled):
    records = [Record("b", "second"), Record("a", "first"), Record("c", "")]
    result = bundled.extract(records, layers=1)
    assert result.ids == ["b", "a", "c"]
    assert result.embeddings.shape == (3, 1, 384)


def test_combine_modes(bundled, texts):
    stack = bundled.embed(texts[:20], layers="-3:", pooling="mean")
    mean = bundled.embed(texts[:20], layers="-3:", pooling="mean", combine="mean")
    total = bundled.embed(texts[:20], layers="-3:", pooling="mean", combine="sum")
    concat = bundled.embed(texts[:20], layers="-3:", pooling="mean", combine="concat")
    assert mean.shape == total.shape == (20, 1, 384)
    assert concat.shape == (20, 1, 3 * 384)
    np.testing.assert_allclose(mean[:, 0], stack.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(total[:, 0], stack.sum(axis=1), atol=1e-4)
    np.testing.assert_allclose(concat[:, 0], stack.reshape(20, -1), atol=1e-6)


def test_float16_output(bundled, texts):
    full = bundled.embed(texts[:10], layers="all")
    half = bundled.embed(texts[:10], layers="all", output_dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=1e-2, rtol=1e-3)


def test_layer_accessor(bundled, texts):
    result = bundled.extract(texts[:4], layers="0,-1")
    np.testing.assert_array_equal(result.layer(-1), result.embeddings[:, 1])
    np.testing.assert_array_equal(result.layer(6), result.embeddings[:, 1])
    with pytest.raises(OptionError, match="not extracted"):
        result.layer(3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pooling": "median"}, "valid pooling modes are: cls, mean, max, first, last"),
        ({"combine": "avg"}, "valid combine modes are: stack, mean, sum, concat"),
        ({"batch_tokens": 0}, "batch_tokens must be at least 1"),
        ({"max_length": 2000}, "exceeds this model's limit of 512"),
        ({"layers": "7"}, "layers 0..6"),
        ({"polling": "mean"}, "unknown option"),
    ],
)
def test_bad_options_fail_clearly(bundled, options, message):
    with pytest.raises(OptionError, match=message.replace(".", r"\.").replace("(", r"\(")):
        bundled.embed(["text"], **options)
