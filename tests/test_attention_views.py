"""Attention analysis without a model, what it draws: the figures as real PNG/SVG files, and
the HTML view: the quantised maps it embeds, and the page in real headless Chromium (it draws,
makes no request, and answers clicks). Its measures: test_attention_analysis.py."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest

from bertlayers.analysis.attention import MEASURES, HeadStats, rollout
from bertlayers.analysis.attention_plots import (
    head_view_figure,
    model_view_figure,
    rollout_figure,
    stats_heatmaps,
)
from bertlayers.analysis.attention_view import ViewText, render_view, write_view
from test_attention_analysis import one_line_error, random_maps

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
