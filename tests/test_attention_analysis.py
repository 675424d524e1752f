"""Attention analysis without a model: every function against a hand computation or an explicit
loop on small arrays, the streamed statistics against the whole corpus at once (with memory
that stays put), the figures as real PNG/SVG files, and the HTML view in real headless
Chromium (it draws, makes no request, and answers clicks)."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import tracemalloc
import xml.etree.ElementTree as ET
import zlib

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
from bertlayers.analysis.attention_plots import (
    head_view_figure,
    model_view_figure,
    rollout_figure,
    stats_heatmaps,
)
from bertlayers.analysis.attention_view import ViewText, render_view, write_view
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


# ---------------------------------------------------------------- figures


def check_png_and_svg(paths, stem: str) -> None:
    from PIL import Image

    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.svg"]
    with Image.open(paths[0]) as image:
        image.verify()
    with Image.open(paths[0]) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn, not blank
    root = ET.parse(paths[1]).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 50
    assert not paths[0].with_name(paths[0].name + ".tmp").exists()


PAIR_ITEMS = ["[CLS]", "the", "$x$", "cat", "##s", ",", "[SEP]", "a", "_mat_", "!", "[SEP]"]
PAIR_SPECIAL = np.array([t in ("[CLS]", "[SEP]") for t in PAIR_ITEMS])
PAIR_SEGMENTS = np.array([0] * 7 + [1] * 4)


def test_figures_are_written_as_png_and_svg(tmp_path):
    import matplotlib

    settings = dict(matplotlib.rcParams)
    maps = random_maps(3, 4, len(PAIR_ITEMS))
    paths = head_view_figure(
        maps, PAIR_ITEMS, [1, 2, 3], [0, 1, 2, 3], tmp_path, layer=2, show_heads=[1, 3],
        special=PAIR_SPECIAL, segments=PAIR_SEGMENTS,
    )  # fmt: skip
    check_png_and_svg(paths, "head-view")
    check_png_and_svg(
        model_view_figure(maps, [1, 2, 3], [0, 1, 2, 3], tmp_path, segments=PAIR_SEGMENTS),
        "model-view",
    )
    check_png_and_svg(
        rollout_figure(rollout(maps, [1, 2, 3], range(4), 4), PAIR_ITEMS, [1, 2, 3], tmp_path),
        "rollout",
    )
    stats = HeadStats([1, 2, 3], [0, 1, 2, 3])
    stats.add(maps, PAIR_SPECIAL, PAIR_ITEMS)
    paths = stats_heatmaps(stats.result(), tmp_path / "stats")
    assert len(paths) == 2 * len(MEASURES)
    for name in MEASURES:
        check_png_and_svg([p for p in paths if p.stem == f"attention-{name}"], f"attention-{name}")
    assert dict(matplotlib.rcParams) == settings  # no global matplotlib state changed


def test_figures_refuse_what_they_cannot_draw(tmp_path):
    maps = random_maps(2, 2, 130)
    items = [str(i) for i in range(130)]
    one_line_error(head_view_figure, maps, items, [1, 2], [0, 1], tmp_path, layer=1,
                   match="too many for a readable figure")  # fmt: skip
    one_line_error(head_view_figure, maps[..., :5, :5], items[:5], [1, 2], [0, 1], tmp_path,
                   layer=7, match="layer 7 is not among")  # fmt: skip
    one_line_error(stats_heatmaps, [], tmp_path, match="empty")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- the HTML view: its data


def embedded(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="attn-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def decoded(data: dict, t: int, k: int, a: int) -> np.ndarray:
    raw = base64.b64decode(data["texts"][t]["maps"][k][a])
    raw = zlib.decompress(raw) if data["encoding"] == "zlib" else raw
    n = len(data["texts"][t]["items"])
    return np.frombuffer(raw, np.uint8).reshape(n, n) * (data["texts"][t]["scale"][k][a] / 255)


def test_view_embeds_quantised_maps_that_decode_back():
    maps = random_maps(2, 3, 9)
    items = ["[CLS]", "</script><script>alert(1)</script>", *"abcdef", "[SEP]"]
    page = render_view([ViewText(maps, items)], [5, 6], [0, 1, 2])
    assert "http://" not in page and "https://" not in page
    assert page.count("</script>") == 2  # the token's own `</script>` is escaped
    data = embedded(page)
    assert data["layers"] == [5, 6] and data["heads"] == [0, 1, 2]
    assert data["texts"][0]["items"] == items
    for k in range(2):
        for a in range(3):
            scale = float(maps[k, a].max())
            assert data["texts"][0]["scale"][k][a] == pytest.approx(scale)
            np.testing.assert_allclose(decoded(data, 0, k, a), maps[k, a], atol=scale / 510 + 1e-7)
    raw = embedded(render_view([ViewText(maps, items)], [5, 6], [0, 1, 2], compress=False))
    np.testing.assert_array_equal(decoded(raw, 0, 1, 2), decoded(data, 0, 1, 2))


def test_view_caps_the_tokens_and_checks_its_input():
    maps, items = random_maps(1, 2, 20), [str(i) for i in range(20)]
    message = one_line_error(render_view, [ViewText(maps, items)], [1], [0, 1], max_tokens=16,
                             match="text 1 has 20 tokens, more than max_tokens=16")  # fmt: skip
    assert "truncate" in message
    data = embedded(render_view([ViewText(maps, items)], [1], [0, 1], max_tokens=16,
                                truncate=True))  # fmt: skip
    assert data["texts"][0]["items"] == items[:16] and data["texts"][0]["truncated_from"] == 20
    np.testing.assert_allclose(decoded(data, 0, 0, 1), maps[0, 1, :16, :16], atol=1 / 510)
    one_line_error(render_view, [ViewText(maps * 3, items)], [1], [0, 1], match=r"in \[0, 1\]")
    one_line_error(render_view, [ViewText(maps, items[:5])], [1], [0, 1], match="items has 5")
    one_line_error(render_view, [ViewText(maps, items)], [1, 2], [0, 1], match="must have the")
    one_line_error(render_view, [], [1], [0], match="at least one text")


# ---------------------------------------------------------------- the HTML view in Chromium

FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Playwright drives it; it never downloads one)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium or playwright missing: apt-get install chromium; pip install "
                        "-r requirements-dev.txt")  # fmt: skip
        pytest.skip("chromium or playwright not installed")
    with sync_playwright() as playwright:  # a fresh temporary profile for each launch
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


class Page:
    """A page of the view with what it logged and asked the network for."""

    def __init__(self, browser, path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=15_000)

    def hooks(self) -> dict:
        return self.page.evaluate("Object.assign({}, document.body.dataset)")

    def canvas(self, selector: str = "#hv-canvas") -> dict:
        """Painted pixels and a digest of the canvas, to see that it drew and that it changed."""
        return self.page.evaluate(
            """(sel) => { const c = document.querySelector(sel);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let painted = 0, hash = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (d[i + 3]) painted++;
              hash = (hash * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2] + 17 * d[i + 3]) | 0; }
            return { painted, hash }; }""",
            selector,
        )

    def wait_draws(self, count: int) -> None:
        self.page.wait_for_function(f"Number(document.body.dataset.draws) >= {count}")

    def wait_painted(self) -> None:
        """Until the head view's last paint shows the text, layer, heads and token selected."""
        self.page.wait_for_function(
            "(d => d.painted === [d.text, d.layer, d.heads, d.token].join('|'))"
            "(document.body.dataset)"
        )

    def close(self) -> None:
        self.context.close()


def expected_lines(data: dict, t: int, k: int, heads: list[int], rows=None, column=None) -> int:
    """Lines the head view draws at the default 'hide weights below 0.01', from the data."""
    total = 0
    for a in heads:
        scale = data["texts"][t]["scale"][k][a] / 255
        q = np.rint(decoded(data, t, k, a) / scale).astype(int)
        qmin = max(1, math.ceil(0.01 / scale - 1e-9))
        if rows is not None:
            q = q[rows]
        if column is not None:
            q = q[:, column]
        total += int((q >= qmin).sum())
    return total


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    """Two texts: a single one and a pair (A/B); 3 layers x 4 heads."""
    folder = tmp_path_factory.mktemp("view")
    single = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]
    texts = [
        ViewText(random_maps(3, 4, len(single)), single,
                 np.array([t in ("[CLS]", "[SEP]") for t in single])),
        ViewText(random_maps(3, 4, len(PAIR_ITEMS)), PAIR_ITEMS, PAIR_SPECIAL, PAIR_SEGMENTS,
                 title="a pair"),
    ]  # fmt: skip
    path = write_view(folder / "view.html", texts, [1, 2, 3], [0, 1, 2, 3])
    return path, embedded(path.read_text())


def test_view_draws_offline_without_errors(browser, view):
    path, data = view
    page = Page(browser, path)
    try:
        hooks = page.hooks()
        assert hooks["view"] == "head" and hooks["painted"] == "0|1|0,1,2,3|"
        assert float(hooks["firstDrawMs"]) > 0
        assert int(hooks["lines"]) == expected_lines(data, 0, 0, [0, 1, 2, 3]) > 0
        assert page.canvas()["painted"] > 2000  # tokens and lines on the canvas
        assert page.errors == [] and "error" not in hooks
        assert page.requests and all(url.startswith("file://") for url in page.requests)
    finally:
        page.close()


def test_head_clicks_and_token_clicks_change_the_head_view(browser, view):
    path, data = view
    page = Page(browser, path)
    try:
        before = page.canvas()
        page.page.click("#head-2")  # untick head 2
        page.wait_painted()
        assert page.hooks()["heads"] == "0,1,3"
        assert int(page.hooks()["lines"]) == expected_lines(data, 0, 0, [0, 1, 3])
        assert page.canvas()["hash"] != before["hash"]
        page.page.dblclick("label:has(#head-1)")  # head 1 alone
        page.page.wait_for_function("document.body.dataset.heads === '1'")
        page.page.select_option("#layer-select", "2")  # the third layer
        page.page.wait_for_function("document.body.dataset.layer === '3'")
        page.wait_painted()
        assert int(page.hooks()["lines"]) == expected_lines(data, 0, 2, [1])
        # click the left token 4 ("on"): only its row stays
        box = page.page.locator("#hv-scroll").bounding_box()
        page.page.mouse.click(box["x"] + 150, box["y"] + 12 + 4 * 18 + 9)
        page.page.wait_for_function("document.body.dataset.token === 'from:4'")
        page.wait_painted()
        assert int(page.hooks()["lines"]) == expected_lines(data, 0, 2, [1], rows=[4])
        page.page.mouse.click(box["x"] + 150, box["y"] + 12 + 4 * 18 + 9)  # let go
        page.page.wait_for_function("document.body.dataset.token === ''")
        assert page.errors == []
    finally:
        page.close()


def test_model_view_cells_open_the_head_view_and_texts_switch(browser, view):
    path, data = view
    page = Page(browser, path)
    try:
        page.page.select_option("#text-select", "1")  # the pair
        page.page.wait_for_function("document.body.dataset.text === '1'")
        page.page.click("#tab-model")
        assert page.hooks()["view"] == "model"
        page.page.wait_for_function("Number(document.body.dataset.cellsDrawn) >= 12")
        cell = "#mv-grid canvas[data-layer='2'][data-head='3']"
        page.page.wait_for_selector(cell + "[data-drawn='1']")
        assert page.canvas(cell)["painted"] > 1000
        page.page.click("#mv-layer-1")  # filter layer 1 out of the grid
        assert page.page.locator("#mv-grid tr[data-layer='1']").is_hidden()
        page.page.click(cell)
        hooks = page.hooks()
        assert (hooks["view"], hooks["layer"], hooks["heads"]) == ("head", "2", "3")
        assert page.page.locator("#head-view").is_visible()
        page.wait_painted()
        assert page.hooks()["painted"] == "1|2|3|"
        assert int(page.hooks()["lines"]) == expected_lines(data, 1, 1, [3])
        assert page.page.locator("#head-3").is_checked()
        assert not page.page.locator("#head-0").is_checked()
        assert page.errors == []
        assert all(url.startswith("file://") for url in page.requests)
    finally:
        page.close()


def test_a_long_text_draws_only_what_is_visible(browser, tmp_path):
    n = 300
    items = ["[CLS]", *[f"w{i}" for i in range(n - 2)], "[SEP]"]
    path = write_view(tmp_path / "long.html", [ViewText(random_maps(1, 2, n, 0.05), items)],
                      [1], [0, 1])  # fmt: skip
    data = embedded(path.read_text())
    page = Page(browser, path)
    try:
        drawn = int(page.hooks()["lines"])
        assert 0 < drawn < expected_lines(data, 0, 0, [0, 1])  # lines out of view left out
        before = page.canvas()["hash"]
        page.page.locator("#hv-scroll").evaluate("el => { el.scrollTop = el.scrollHeight; }")
        page.wait_draws(2)
        assert page.canvas()["hash"] != before
        assert page.errors == []
    finally:
        page.close()
