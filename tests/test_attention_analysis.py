"""Attention analysis without a model, its measures: words from pieces, rollout, norm-weighted
maps and per-head statistics, each against a hand computation or an explicit loop on small
arrays, and the streamed statistics against the whole corpus at once (with memory that stays
put). Its figures and HTML view: test_attention_views.py."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from bertlayers.analysis.attention import (
    MEASURES,
    HeadStats,
    merge_items,
    merge_words,
    norm_weighted,
    punctuation_mask,
    rollout,
    row_measures,
    stats_csv,
    write_stats_csv,
    write_stats_json,
)
from bertlayers.errors import OptionError

RNG = np.random.default_rng(7)


def random_maps(layers: int, heads: int, tokens: int, concentration: float = 0.3) -> np.ndarray:
    """Row-stochastic maps (K, A, T, T), float32, as the model side hands them over."""
    return RNG.dirichlet(np.full(tokens, concentration), size=(layers, heads, tokens)).astype(
        np.float32
    )


def one_line_error(call, *args, match: str, **kwargs) -> str:
    with pytest.raises(OptionError, match=match) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- words from pieces

# [CLS] play ##ing ball [SEP]: one head, rows summing to 1
PIECES = np.array(
    [
        [0.50, 0.10, 0.10, 0.20, 0.10],
        [0.20, 0.20, 0.40, 0.10, 0.10],
        [0.00, 0.60, 0.20, 0.10, 0.10],
        [0.10, 0.30, 0.30, 0.20, 0.10],
        [0.25, 0.25, 0.25, 0.00, 0.25],
    ],
    dtype=np.float32,
)


def test_merge_words_sums_columns_and_averages_rows_by_hand():
    words, starts = merge_words(PIECES[None, None], np.array([-1, 0, 0, 1, -1]))
    # to "playing" = columns 1 + 2; from "playing" = mean of rows 1 and 2 ((0.2+0)/2 = 0.1, ...)
    expected = [
        [0.50, 0.20, 0.20, 0.10],
        [0.10, 0.70, 0.10, 0.10],
        [0.10, 0.60, 0.20, 0.10],
        [0.25, 0.50, 0.00, 0.25],
    ]
    assert words.shape == (1, 1, 4, 4) and words.dtype == np.float32
    np.testing.assert_allclose(words[0, 0], expected, atol=1e-6)
    assert starts.tolist() == [0, 1, 3, 4]
    assert merge_items(["[CLS]", "play", "##ing", "ball", "[SEP]"], starts) == [
        "[CLS]", "playing", "ball", "[SEP]"
    ]  # fmt: skip


def test_merge_words_on_a_pair_with_many_heads_matches_a_loop():
    # [CLS] a b [SEP] c ##d ##e [SEP] (text B numbered after text A), two layers x three heads
    word_ids = np.array([-1, 0, 1, -1, 2, 2, 2, -1])
    segments = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    maps = random_maps(2, 3, 8)
    words, starts = merge_words(maps, word_ids)
    units = [[0], [1], [2], [3], [4, 5, 6], [7]]
    assert starts.tolist() == [u[0] for u in units]
    assert segments[starts].tolist() == [0, 0, 0, 0, 1, 1]
    assert (word_ids[starts] < 0).tolist() == [True, False, False, True, False, True]
    for k in range(2):
        for a in range(3):
            for u, rows in enumerate(units):
                for v, columns in enumerate(units):
                    value = sum(maps[k, a, i, j] for i in rows for j in columns) / len(rows)
                    assert words[k, a, u, v] == pytest.approx(value, abs=1e-6)
    np.testing.assert_allclose(words.sum(-1), 1, atol=1e-5)


def test_merge_words_keeps_adjacent_specials_apart_and_refuses_split_words():
    # RoBERTa pairs: <s> x </s> </s> y </s>: each special its own unit
    _, starts = merge_words(random_maps(1, 1, 6), np.array([-1, 0, -1, -1, 1, -1]))
    assert starts.tolist() == [0, 1, 2, 3, 4, 5]
    # a pair whose second text restarts the word numbering: word 0 is then in two places
    message = one_line_error(
        merge_words, random_maps(1, 1, 7), np.array([-1, 0, 1, -1, 0, 1, -1]), match="word 0"
    )
    assert "positions [1, 4]" in message
    one_line_error(merge_words, random_maps(1, 1, 4), np.array([-1, 0, -1]), match="per token")


# ---------------------------------------------------------------- rollout


def test_rollout_by_hand():
    first = np.array([[1.0, 0.0], [0.5, 0.5]])  # A_1, one head
    second = np.array([[0.0, 1.0], [1.0, 0.0]])  # A_2
    result = rollout(np.stack([first, second])[:, None], [1, 2], [0], num_heads=1)
    # Â_1 = (A_1 + I) / 2 = [[1, 0], [.25, .75]]; Â_2 = [[.5, .5], [.5, .5]]; R_2 = Â_2 @ Â_1
    np.testing.assert_allclose(result[0], [[1.0, 0.0], [0.25, 0.75]], atol=1e-7)
    np.testing.assert_allclose(result[1], [[0.625, 0.375], [0.625, 0.375]], atol=1e-7)


def test_rollout_matches_an_explicit_loop():
    layers, heads, n = 3, 4, 5
    maps = random_maps(layers, heads, n)
    result = rollout(maps, [1, 2, 3], [0, 1, 2, 3], num_heads=4)
    product = [[float(i == j) for j in range(n)] for i in range(n)]
    for k in range(layers):
        mixed = [
            [(sum(float(maps[k, a, i, j]) for a in range(heads)) / heads + (i == j)) / 2
             for j in range(n)]
            for i in range(n)
        ]  # fmt: skip
        mixed = [[v / sum(row) for v in row] for row in mixed]
        product = [
            [sum(mixed[i][m] * product[m][j] for m in range(n)) for j in range(n)] for i in range(n)
        ]
        np.testing.assert_allclose(result[k], product, atol=1e-6)
        np.testing.assert_allclose(result[k].sum(-1), 1, atol=1e-6)


def test_rollout_refuses_what_it_cannot_roll_out():
    maps = random_maps(2, 2, 3)
    one_line_error(rollout, maps, [2, 3], [0, 1], 2, match="consecutive layers from 1")
    one_line_error(rollout, maps, [1, 2], [0, 1], 12, match="every head: got 0, 1 of 12")
    one_line_error(rollout, maps, [1, 2, 3], [0, 1], 2, match="do not match")


# ---------------------------------------------------------------- norm-weighted


def test_norm_weighted_by_hand_and_against_the_formula():
    maps = np.array([[[[0.3, 0.7], [1.0, 0.0]]]], dtype=np.float32)
    norms = np.array([[[2.0, 10.0]]])
    np.testing.assert_allclose(norm_weighted(maps, norms)[0, 0], [[0.6, 7.0], [2.0, 0.0]], 1e-6)
    maps, norms = random_maps(2, 3, 4), RNG.uniform(0.5, 3, size=(2, 3, 4))
    result = norm_weighted(maps, norms)
    for (k, a, i, j), value in np.ndenumerate(result):
        assert value == pytest.approx(maps[k, a, i, j] * norms[k, a, j], rel=1e-6)
    one_line_error(norm_weighted, maps, norms[:, :, :3], match="value_norms must have the shape")


# ---------------------------------------------------------------- per-head statistics

# [CLS] hi , [SEP]: one head
SMALL = np.array(
    [
        [0.70, 0.10, 0.10, 0.10],
        [0.20, 0.30, 0.10, 0.40],
        [0.00, 0.50, 0.50, 0.00],
        [0.25, 0.25, 0.25, 0.25],
    ],
    dtype=np.float32,
)
SMALL_ITEMS = ["[CLS]", "hi", ",", "[SEP]"]
SMALL_SPECIAL = np.array([True, False, False, True])


def h(*weights: float) -> float:
    return -sum(w * math.log(w) for w in weights if w > 0)


SMALL_ROWS = {  # each measure of each row, worked out by hand
    "entropy": [h(0.7, 0.1, 0.1, 0.1), h(0.2, 0.3, 0.1, 0.4), math.log(2), math.log(4)],
    "to_cls": [0.7, 0.2, 0.0, 0.25],
    "to_sep": [0.1, 0.4, 0.0, 0.25],
    "to_punct": [0.1, 0.1, 0.5, 0.25],
    "to_prev": [math.nan, 0.2, 0.5, 0.25],
    "to_next": [0.1, 0.1, 0.0, math.nan],
    "to_self": [0.7, 0.3, 0.5, 0.25],
    "distance": [0.1 + 0.2 + 0.3, 0.2 + 0.1 + 0.8, 0.5, 0.75 + 0.5 + 0.25],
}


def test_row_measures_by_hand():
    rows = row_measures(SMALL[None, None], SMALL_SPECIAL, punctuation_mask(SMALL_ITEMS))
    assert list(rows) == list(MEASURES)
    for name, expected in SMALL_ROWS.items():
        np.testing.assert_allclose(rows[name][0, 0], expected, atol=1e-6, err_msg=name)


def test_head_stats_by_hand_with_and_without_special_rows():
    stats = HeadStats([3], [5])
    stats.add(SMALL[None, None], SMALL_SPECIAL, items=SMALL_ITEMS)
    (row,) = stats.result()
    assert row["layer"] == 3 and row["head"] == 5
    for name, values in SMALL_ROWS.items():
        assert row[name] == pytest.approx(np.nanmean(values), abs=1e-6), name
    words_only = HeadStats([3], [5], special_rows=False)
    words_only.add(SMALL[None, None], SMALL_SPECIAL, punctuation=np.array([0, 0, 1, 0], bool))
    (row,) = words_only.result()
    assert row["to_cls"] == pytest.approx((0.2 + 0.0) / 2)
    assert row["to_prev"] == pytest.approx((0.2 + 0.5) / 2)
    assert row["to_next"] == pytest.approx((0.1 + 0.0) / 2)
    assert row["distance"] == pytest.approx((1.1 + 0.5) / 2)
    assert words_only.settings()["query_rows"] == 2 and words_only.settings()["texts"] == 1


def test_to_sep_sums_every_separator_of_a_pair():
    # [CLS] a [SEP] b [SEP]: to_sep of a row = its weights at positions 2 and 4
    maps = random_maps(1, 2, 5)
    special = np.array([True, False, True, False, True])
    rows = row_measures(maps, special, np.zeros(5, bool))
    np.testing.assert_allclose(rows["to_sep"], maps[..., 2] + maps[..., 4], atol=1e-6)
    np.testing.assert_allclose(rows["to_cls"], maps[..., 0], atol=1e-7)


def test_punctuation_is_unicode_punctuation_less_the_piece_markers():
    items = [",", "##.", "Ġ,", "▁!", "...", "«", "Ġ", "'s", "a", "[SEP]", "—", "$"]
    assert punctuation_mask(items).tolist() == [
        True, True, True, True, True, True, False, False, False, False, True, False
    ]  # fmt: skip


def reference_table(texts, special_rows: bool) -> dict[tuple[int, int], dict[str, float]]:
    """Every measure straight from its definition, with plain loops over the whole corpus."""
    sums: dict = {}
    for maps, special, punct in texts:
        n = maps.shape[-1]
        for k in range(maps.shape[0]):
            for a in range(maps.shape[1]):
                cell = sums.setdefault((k, a), {m: [] for m in MEASURES})
                for i in range(n):
                    if special[i] and not special_rows:
                        continue
                    w = [float(v) for v in maps[k, a, i]]
                    cell["entropy"].append(-sum(x * math.log(x) for x in w if x > 0))
                    cell["to_cls"].append(w[0])
                    cell["to_sep"].append(sum(w[j] for j in range(1, n) if special[j]))
                    cell["to_punct"].append(
                        sum(w[j] for j in range(n) if punct[j] and not special[j])
                    )
                    if i > 0:
                        cell["to_prev"].append(w[i - 1])
                    if i < n - 1:
                        cell["to_next"].append(w[i + 1])
                    cell["to_self"].append(w[i])
                    cell["distance"].append(sum(w[j] * abs(i - j) for j in range(n)))
    return {key: {m: sum(v) / len(v) for m, v in cell.items()} for key, cell in sums.items()}


@pytest.mark.parametrize("special_rows", [True, False])
def test_streamed_stats_equal_the_whole_corpus_at_once(special_rows):
    layers, heads = [2, 4], [0, 5, 7]
    texts = []
    for _ in range(25):
        n = int(RNG.integers(3, 20))
        special = np.zeros(n, bool)
        special[[0, n - 1]] = True
        if n > 6 and RNG.random() < 0.5:  # a pair: a separator in the middle
            special[n // 2] = True
        texts.append((random_maps(2, 3, n), special, RNG.random(n) < 0.2))
    stats = HeadStats(layers, heads, special_rows=special_rows)
    for maps, special, punct in texts:
        stats.add(maps, special, punctuation=punct)
    expected = reference_table(texts, special_rows)
    table = stats.result()
    assert [(r["layer"], r["head"]) for r in table] == [(v, h) for v in layers for h in heads]
    for row in table:
        want = expected[(layers.index(row["layer"]), heads.index(row["head"]))]
        for name in MEASURES:
            assert row[name] == pytest.approx(want[name], abs=1e-6), name
    assert stats.settings()["texts"] == 25


def test_the_accumulator_does_not_grow_with_the_corpus():
    def arrays(stats):
        return {k: (v.shape, v.nbytes) for k, v in vars(stats).items() if hasattr(v, "nbytes")}

    stats = HeadStats([1, 2], [0, 1, 2])
    special = np.array([True, False, False, False, False, True])
    stats.add(random_maps(2, 3, 6), special, punctuation=np.zeros(6, bool))
    after_one, bytes_after_one, attributes = arrays(stats), stats.nbytes, set(vars(stats))
    tracemalloc.start()
    try:
        stats.add(random_maps(2, 3, 6), special, punctuation=np.zeros(6, bool))
        held = tracemalloc.get_traced_memory()[0]
        for _ in range(998):
            stats.add(random_maps(2, 3, 6), special, punctuation=np.zeros(6, bool))
        grown = tracemalloc.get_traced_memory()[0] - held
    finally:
        tracemalloc.stop()
    assert stats.texts == 1000
    assert arrays(stats) == after_one and stats.nbytes == bytes_after_one
    assert set(vars(stats)) == attributes
    assert stats.nbytes == (len(MEASURES) * 2 * 3) * 8 + len(MEASURES) * 8
    assert grown < 20_000  # bytes still held after 998 more texts: nothing kept per text


def test_stats_refuse_maps_that_are_not_attention():
    stats = HeadStats([1], [0])
    bad = np.full((1, 1, 3, 3), 0.5, dtype=np.float32)
    one_line_error(stats.add, bad, np.zeros(3, bool), ["a", "b", "c"], match="sum to 1")
    one_line_error(stats.add, random_maps(2, 1, 3), np.zeros(3, bool), ["a", "b", "c"],
                   match="do not match")  # fmt: skip
    one_line_error(stats.add, random_maps(1, 1, 3), np.zeros(3, bool), match="token strings")
    assert stats.texts == 0
    (row,) = stats.result()
    assert all(row[m] is None for m in MEASURES)  # nothing counted: no numbers made up


def test_stats_written_as_csv_and_json(tmp_path):
    stats = HeadStats([1, 2], [0, 1])
    stats.add(np.stack([np.stack([SMALL, SMALL])] * 2), SMALL_SPECIAL, SMALL_ITEMS)
    table = stats.result()
    table[3]["to_prev"] = None  # a measure with no row counted
    csv_path = write_stats_csv(table, tmp_path / "stats.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "layer,head," + ",".join(MEASURES)
    assert len(lines) == 5 and lines[1].startswith("1,0,")
    cells = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert float(cells["to_cls"]) == pytest.approx(np.mean(SMALL_ROWS["to_cls"]), abs=1e-6)
    assert lines[4].split(",")[2 + list(MEASURES).index("to_prev")] == ""
    assert csv_path.read_text() == stats_csv(table)
    json_path = write_stats_json(table, tmp_path / "stats.json", stats.settings())
    data = json.loads(json_path.read_text())
    assert data["measures"] == MEASURES and data["rows"] == table and data["texts"] == 1
    assert "bertlayers_version" in data and data["rows"][3]["to_prev"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.csv", "stats.json"]  # no .tmp
