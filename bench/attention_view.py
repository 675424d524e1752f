"""Attention view: how long the standalone HTML page takes to draw, in headless Chromium.

For each length (64, 256, 512 tokens by default) it builds one page from synthetic
row-stochastic maps of the bundled model's shape (6 layers x 12 heads): each row drawn from a
Dirichlet(0.05), which puts most of a row on a few tokens as trained heads do (a flat
Dirichlet(1) would leave every weight near 1/T, under the view's 0.01 line cut, and nothing to
draw). Each round is a fresh page load in a fresh browser context; it reports medians of:
- `first_draw_ms`: the page's own `data-first-draw-ms` (`performance.now()` at the first paint
  of the head view: all 12 heads of layer 1, from navigation start, parsing included);
- `layer_switch_ms`: choosing another layer until that layer is painted;
- `model_view_ms`: opening the model view until every cell (72) is drawn.
It also records the page size, the time to build it in Python and the lines drawn.

    python bench/attention_view.py --out bench/results/attention-view.json
    python bench/attention_view.py --rounds 1 --tokens 64         # a quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bertlayers.analysis.attention_view import ViewText, write_view  # noqa: E402

FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def synthetic_text(tokens: int, layers: int, heads: int, seed: int) -> ViewText:
    """Random row-stochastic maps (layers, heads, T, T) with [CLS] ... [SEP] items."""
    rng = np.random.default_rng(seed)
    maps = rng.dirichlet(np.full(tokens, 0.05), size=(layers, heads, tokens)).astype(np.float32)
    items = ["[CLS]", *[f"tok{i}" for i in range(tokens - 2)], "[SEP]"]
    special = np.zeros(tokens, bool)
    special[[0, -1]] = True
    return ViewText(maps, items, special)


# In the page, so that no driver round trip is timed: act, then watch <body>'s attributes (a
# MutationObserver, no polling) until the page says it is done.
_TIMED = """async ([what, cells]) => {
  const d = document.body.dataset, start = performance.now();
  const done = what === "switch"
    ? () => d.layer !== "1" && d.painted && d.painted.split("|")[1] === d.layer
    : () => Number(d.cellsDrawn) >= cells;
  await new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (done()) { observer.disconnect(); resolve(); }
    });
    observer.observe(document.body, { attributes: true });
    if (what === "switch") {
      const select = document.getElementById("layer-select");
      select.value = "1";
      select.dispatchEvent(new Event("change"));
    } else {
      document.getElementById("tab-model").click();
    }
  });
  return performance.now() - start;
}"""


def one_load(browser, page_path: Path, cells: int) -> dict:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri(), timeout=120_000)
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        first = float(page.evaluate("document.body.dataset.firstDrawMs"))
        lines = int(page.evaluate("document.body.dataset.lines"))
        switch = page.evaluate(_TIMED, ["switch", cells])
        model = page.evaluate(_TIMED, ["model", cells])
    finally:
        context.close()
    if errors:
        raise SystemExit(f"the page failed: {errors[0]}")
    return {"first_draw_ms": first, "layer_switch_ms": switch, "model_view_ms": model,
            "lines": lines}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="64,256,512", help="text lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="page loads per length (median)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    lengths = [int(v) for v in args.tokens.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, headless=True, args=FLAGS
        )
        version = browser.version
        for tokens in lengths:
            text = synthetic_text(tokens, args.layers, args.heads, seed=tokens)
            path = Path(tmp) / f"view-{tokens}.html"
            start = time.perf_counter()
            write_view(path, [text], range(1, args.layers + 1), range(args.heads),
                       max_tokens=max(lengths))  # fmt: skip
            build = time.perf_counter() - start
            loads = [one_load(browser, path, args.layers * args.heads) for _ in range(args.rounds)]
            results[str(tokens)] = {
                "html_bytes": path.stat().st_size,
                "build_s": round(build, 3),
                "lines_first_draw": loads[0]["lines"],
                **{
                    key: round(statistics.median(load[key] for load in loads), 1)
                    for key in ("first_draw_ms", "layer_switch_ms", "model_view_ms")
                },
                "rounds": loads,
            }
            row = results[str(tokens)]
            print(f"{tokens:>5} tokens: first draw {row['first_draw_ms']:8.1f} ms, layer switch "
                  f"{row['layer_switch_ms']:7.1f} ms, model view {row['model_view_ms']:8.1f} ms, "
                  f"{row['html_bytes'] / 1e6:6.2f} MB page")  # fmt: skip
        browser.close()
    from meta import run_record

    report = {
        **run_record(),
        "chromium": version,
        "shape": {"layers": args.layers, "heads": args.heads},
        "rounds": args.rounds,
        "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
