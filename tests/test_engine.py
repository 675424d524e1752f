"""The `Engine` seam and the pure pieces under it, against hand-computed cases and the reference."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from bertlayers import Engine, ExtractConfig
from bertlayers.chunks import RecordVectors
from bertlayers.core.batching import Encoded, collate
from bertlayers.core.pooling import (
    pool,
    pool_stitched,
    pooling_mask,
    word_pooling,
)
from bertlayers.core.windowed import content_tokens, windows_of
from bertlayers.core.windowed import token_layout as _token_plan
from bertlayers.io.readers import Record, records_from_texts, records_from_words
from bertlayers.options import Pooling

TOLERANCE = 1e-4

# ---------------------------------------------------------------- pooling, by hand


@pytest.fixture
def hidden() -> torch.Tensor:
    """(K=1, B=2, T=4, H=2): text 0 has 4 real tokens, text 1 has 3 and one pad."""
    return torch.tensor(
        [
            [
                [[0.0, 1.0], [2.0, 3.0], [4.0, -5.0], [6.0, 7.0]],
                [[1.0, 1.0], [3.0, -1.0], [5.0, 2.0], [99.0, 99.0]],
            ]
        ]
    )


def test_pooling_mask_leaves_out_padding_and_specials_and_falls_back_for_empty_texts():
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    special = torch.tensor([[1, 0, 0, 1], [1, 1, 0, 0]])  # text 1: [CLS] [SEP] only
    mask = pooling_mask(attention, special, include_special=False)
    assert mask.tolist() == [[False, True, True, False], [True, True, False, False]]
    assert pooling_mask(attention, special, True).tolist() == attention.bool().tolist()


def test_each_pooling_by_hand(hidden):
    mask = torch.tensor([[False, True, True, False], [True, True, True, False]])
    assert pool(hidden, mask, Pooling.CLS)[0].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    mean = pool(hidden, mask, Pooling.MEAN)[0].numpy()
    np.testing.assert_allclose(mean, [[3.0, -1.0], [3.0, 2.0 / 3.0]], rtol=1e-6)
    assert pool(hidden, mask, Pooling.MAX)[0].tolist() == [[4.0, 3.0], [5.0, 2.0]]
    assert pool(hidden, mask, Pooling.FIRST)[0].tolist() == [[2.0, 3.0], [1.0, 1.0]]
    assert pool(hidden, mask, Pooling.LAST)[0].tolist() == [[4.0, -5.0], [5.0, 2.0]]
    assert pool(hidden, mask, Pooling.MAX)[0, 1, 0] != 99.0  # the pad never counts


def test_pooling_a_stitched_record_is_the_batch_pooling(hidden):
    rows = hidden[0, 0].unsqueeze(1).numpy()  # (T, K=1, H)
    cls = np.array([[[10.0, 20.0]], [[30.0, 40.0]]])  # two windows' [CLS]
    everything = torch.ones((1, 4), dtype=torch.bool)
    for mode in (Pooling.MEAN, Pooling.MAX, Pooling.FIRST, Pooling.LAST):
        expected = pool(hidden[:, :1], everything, mode)[:, 0].numpy()
        np.testing.assert_allclose(pool_stitched(rows, cls, mode), expected)
    assert pool_stitched(rows, cls, Pooling.CLS).tolist() == [[20.0, 30.0]]


def test_word_pooling_by_hand():
    tokens = np.arange(10, dtype=np.float32).reshape(5, 1, 2)  # 5 pieces, K=1, H=2
    word_ids = np.array([0, 0, 1, 2, 2])
    assert word_pooling(tokens, word_ids, 3, "first")[:, 0].tolist() == [[0, 1], [4, 5], [6, 7]]
    assert word_pooling(tokens, word_ids, 3, "last")[:, 0].tolist() == [[2, 3], [4, 5], [8, 9]]
    assert word_pooling(tokens, word_ids, 3, "mean")[:, 0].tolist() == [[1, 2], [4, 5], [7, 8]]
    assert word_pooling(tokens, word_ids, 3, "max")[:, 0].tolist() == [[2, 3], [4, 5], [8, 9]]


# ---------------------------------------------------------------- batching pieces


def test_collate_pads_with_the_pad_id_and_masks_what_is_real():
    encoded = Encoded(
        input_ids=[[101, 7, 102], [101, 8, 9, 10, 102], [101, 102]],
        token_type_ids=[[0, 0, 0], [0, 0, 0, 1, 1], [0, 0]],
        special_mask=[[1, 0, 1], [1, 0, 0, 0, 1], [1, 1]],
        full_lengths=np.array([3, 5, 2]),
        truncated=np.zeros(3, dtype=bool),
    )
    batch = collate(encoded, np.array([2, 0]), pad_id=0)
    assert batch["input_ids"].tolist() == [[101, 102, 0], [101, 7, 102]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["special_tokens_mask"].tolist() == [[True, True, False], [True, False, True]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    wide = collate(encoded, np.array([1]), pad_id=5)
    assert wide["input_ids"].tolist() == [[101, 8, 9, 10, 102]]


def test_the_token_plan_places_every_content_token_once(bundled):
    """A long text cut into overlapping windows: the plan's rows cover the output exactly,
    each window giving the tokens it owns, in order."""
    engine = bundled.engine
    config = ExtractConfig(level="token", max_length=16, stride=3)
    text = " ".join(f"word{i}" for i in range(60))
    plan_ = engine.plan(config)
    content, _ = content_tokens(engine.encoder, [Record("0", text)], plan_)
    windows = windows_of(engine.encoder, content, plan_)
    assert windows.windows[0] > 3
    prefix, suffix = engine.encoder.special_template
    for keep_special, extra in ((False, 0), (True, len(prefix) + len(suffix))):
        plan, n_rows = _token_plan(windows, len(prefix), len(suffix), keep_special)
        assert n_rows == int(windows.covered[0]) + extra
        spans = sorted((int(d), int(d + hi - lo)) for lo, hi, d in plan if hi > lo)
        assert spans[0][0] == 0 and spans[-1][1] == n_rows
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gap


# ---------------------------------------------------------------- the engine


def _mixed_texts(review_texts) -> list[str]:
    return [
        "",
        "   ",
        "Short.",
        review_texts[0],
        "word " * 700,  # over 512 tokens
        review_texts[1] * 3,
        "a",
    ]


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "last"])
def test_engine_sentences_of_mixed_lengths_equal_the_reference(
    bundled, bundled_reference, review_texts, pooling
):
    texts = _mixed_texts(review_texts)
    config = ExtractConfig(layers="all", pooling=pooling)
    results = bundled.engine.embed(list(records_from_texts(texts)), config)
    assert [r.id for r in results] == [str(i) for i in range(len(texts))]
    assert all(isinstance(r, RecordVectors) and r.vectors.shape == (7, 384) for r in results)
    assert [r.truncated for r in results] == [False, False, False, False, True, False, False]
    for text, result in zip(texts, results, strict=True):
        expected = bundled_reference.pooled(text, pooling, max_length=512)
        assert np.abs(result.vectors - expected).max() <= TOLERANCE


def test_engine_tokens_and_words_equal_the_streaming_results(bundled, review_texts):
    texts = _mixed_texts(review_texts)
    records = list(records_from_texts(texts))
    tokens = bundled.engine.embed(records, ExtractConfig(level="token", layers="0,-1"))
    streamed = bundled.extract_tokens(texts, layers="0,-1")
    for i, result in enumerate(tokens):
        np.testing.assert_array_equal(result.vectors, streamed[i].vectors)
        assert result.items == streamed[i].items
        np.testing.assert_array_equal(result.spans, streamed[i].spans)
        assert result.windows == streamed.windows[i] and result.n_tokens == streamed.n_tokens[i]
    assert tokens[4].windows > 1 and not tokens[4].truncated  # split, nothing dropped
    words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    by_engine = bundled.engine.embed(
        list(records_from_words(words)), ExtractConfig(level="word", word_pooling="mean")
    )
    expected = bundled.extract_words(words, word_pooling="mean")
    for i, result in enumerate(by_engine):
        np.testing.assert_array_equal(result.vectors, expected[i].vectors)
        assert result.items == words[i]


def test_engine_is_thread_safe(bundled, review_texts):
    """Four threads embed different texts at once; each gets what it gets alone."""
    batches = [review_texts[i * 8 : i * 8 + 8] for i in range(4)]
    config = ExtractConfig(layers="-1")
    alone = [
        [r.vectors for r in bundled.engine.embed(list(records_from_texts(b)), config)]
        for b in batches
    ]
    together: list = [None] * 4

    def work(i: int) -> None:
        records = list(records_from_texts(batches[i]))
        together[i] = [r.vectors for r in bundled.engine.embed(records, config)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for mine, theirs in zip(alone, together, strict=True):
        np.testing.assert_array_equal(np.stack(mine), np.stack(theirs))


def test_an_engine_wraps_into_an_extractor_and_runtime_replaces_the_old_flags(bundled):
    from bertlayers import Extractor, Runtime
    from bertlayers.backends import resolve_runtime
    from bertlayers.errors import OptionError

    assert Extractor(engine=bundled.engine).embed(["x"], layers="0").shape == (1, 1, 384)
    assert bundled.engine.runtime is Runtime.TORCH
    with pytest.warns(DeprecationWarning, match="use runtime='int8'"):
        assert resolve_runtime(None, int8=True) is Runtime.INT8
    with pytest.warns(DeprecationWarning, match="use runtime='openvino'"):
        assert resolve_runtime(None, backend="openvino") is Runtime.OPENVINO
    assert resolve_runtime("compile") is Runtime.COMPILE
    with pytest.raises(OptionError, match="valid runtime modes are: torch, compile, int8"):
        resolve_runtime("onnx")
    with pytest.raises(OptionError, match="disagree"), pytest.warns(DeprecationWarning):
        resolve_runtime("torch", int8=True)
    assert Engine is type(bundled.engine)


# ---------------------------------------------------------------- several jobs, shared batches

SHARED_JOBS = [
    dict(layers="all", pooling="mean"),
    dict(layers=2, pooling="cls", include_special=True),
    dict(layers="-2:", pooling="max", combine="mean"),
    dict(layers="1,4", pooling="mean", combine="concat", output_dtype="float16"),
    dict(layers=3, pooling="mean", max_length=16),  # another max length: its own passes
    dict(level="token", layers="0,-1"),
    dict(level="token", layers=-1, include_special=True),
    dict(level="token", layers="2,4", combine="mean"),
    dict(level="word", layers="1:3", word_pooling="mean", combine="sum"),
    dict(level="word", layers="1:3", word_pooling="max", combine="mean"),
    dict(level="word", layers="1:3", word_pooling="max", combine="mean", output_dtype="float16"),
    dict(level="word", layers="1:3", word_pooling="max", combine="mean"),  # after a float16
    dict(level="sentence", long="split", layers="all", pooling="mean", combine="mean"),
]


def test_jobs_with_different_settings_share_batches_and_each_gets_what_it_gets_alone(
    bundled, bundled_reference, review_texts
):
    """Every job pooled its own way from shared forward passes equals the job run alone; the
    plain sentence jobs also equal the reference."""
    texts = _mixed_texts(review_texts)
    jobs = []
    for n, options in enumerate(SHARED_JOBS):
        mine = texts[n % 3 :: 2] if n % 2 else texts  # jobs of different sizes and texts
        jobs.append((list(records_from_texts(mine)), ExtractConfig(**options)))
    outcomes = bundled.engine.embed_many(jobs)
    for (records, config), outcome in zip(jobs, outcomes, strict=True):
        alone = bundled.engine.embed(records, config)
        assert len(outcome) == len(alone) == len(records)
        for got, expected in zip(outcome, alone, strict=True):
            assert got.id == expected.id and got.vectors.dtype == expected.vectors.dtype
            assert got.vectors.shape == expected.vectors.shape, config
            diff = np.abs(got.vectors.astype(np.float32) - expected.vectors.astype(np.float32))
            assert diff.max(initial=0) <= (1e-3 if config.output_dtype.value == "float16" else 1e-5)
            assert (got.n_tokens, got.truncated, got.windows) == (
                expected.n_tokens,
                expected.truncated,
                expected.windows,
            )
            assert got.items == expected.items
    for record, got in zip(jobs[0][0], outcomes[0], strict=True):
        expected = bundled_reference.pooled(record.text, "mean", max_length=512)
        assert np.abs(got.vectors - expected).max() <= TOLERANCE


def test_a_bad_job_gets_its_error_and_the_others_are_embedded(bundled, review_texts):
    good = (list(records_from_texts(review_texts[:3])), ExtractConfig(layers=-1))
    too_long = (
        list(records_from_texts(["word " * 600])),
        ExtractConfig(layers=-1, long="error"),
    )
    pair_at_token_level = (
        [Record(id="7", text="a", pair="b")],
        ExtractConfig(level="token", layers=-1),
    )
    tokens = (list(records_from_texts(["fine text"])), ExtractConfig(level="token", layers=-1))
    bad_layer = (list(records_from_texts(["x"])), ExtractConfig(layers=-1, max_length=9999))
    outcomes = bundled.engine.embed_many([good, too_long, pair_at_token_level, tokens, bad_layer])
    assert len(outcomes[0]) == 3 and len(outcomes[3]) == 1
    assert "over the limit of 512" in str(outcomes[1])
    assert "record 7" in str(outcomes[2]) and "sentence pairs" in str(outcomes[2])
    assert "exceeds this model's limit" in str(outcomes[4])
