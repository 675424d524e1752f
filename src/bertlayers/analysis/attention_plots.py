"""Static figures of attention (PNG and SVG): a head view and a model view as bertviz draws
them on screen (which it cannot export), a heatmap per head statistic, and attention rollout.

Figures are built on `matplotlib.figure.Figure`, never pyplot, so nothing here touches global
matplotlib state or needs a screen; each file is written to NAME.tmp and renamed.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..outputs import write_atomically
from .attention import MEASURES

_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a",
]  # fmt: skip
_LAYER_LABEL = "layer (self-attention inside encoder layer k)"
_SPECIAL, _TEXT_A, _TEXT_B = "#888888", "#222222", "#1a5fb4"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(
    figure, directory: Path, stem: str, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Write the figure as `STEM.png` and/or `STEM.svg` in `directory`, each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {"png": {"Software": None}, "svg": {"Date": None}}
    paths = []
    for fmt in formats:
        if fmt not in metadata:
            raise OptionError(f"a figure is png or svg, not '{fmt}'")
        path = directory / f"{stem}.{fmt}"
        write_atomically(path, lambda p, f=fmt: figure.savefig(p, format=f, metadata=metadata[f]))
        paths.append(path)
    return paths


def _colour(head: int) -> str:
    return _PALETTE[head % len(_PALETTE)]


def _check(maps: np.ndarray, layers: Sequence[int], heads: Sequence[int]) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[:2] != (len(layers), len(heads)):
        raise OptionError(
            f"maps must have the shape ({len(layers)} layers, {len(heads)} heads, T, T): "
            f"got {maps.shape}"
        )
    return maps


def _token_colours(n: int, special, segments) -> list[str]:
    special = np.zeros(n, bool) if special is None else np.asarray(special, bool)
    segments = np.zeros(n, int) if segments is None else np.asarray(segments)
    return [
        _SPECIAL if s else _TEXT_B if g else _TEXT_A for s, g in zip(special, segments, strict=True)
    ]


def head_view_figure(
    maps: np.ndarray,
    items: Sequence[str],
    layers: Sequence[int],
    heads: Sequence[int],
    directory: str | Path,
    *,
    layer: int,
    show_heads: Sequence[int] | None = None,
    special: np.ndarray | None = None,
    segments: np.ndarray | None = None,
    min_weight: float = 0.01,
    max_tokens: int = 120,
    stem: str = "head-view",
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """One layer as bertviz's head view: tokens in two columns (from, to), a line per weight
    at least `min_weight` with that opacity, a colour per head (`show_heads`, default all)."""
    maps = _check(maps, layers, heads)
    layers, heads = [int(v) for v in layers], [int(v) for v in heads]
    if layer not in layers:
        raise OptionError(f"layer {layer} is not among the maps' layers {layers}")
    shown = heads if show_heads is None else [int(h) for h in show_heads]
    missing = [h for h in shown if h not in heads]
    if missing:
        raise OptionError(f"head {missing[0]} is not among the maps' heads {heads}")
    n = maps.shape[-1]
    if n > max_tokens:
        raise OptionError(
            f"{n} tokens are too many for a readable figure (max_tokens={max_tokens}): pass "
            "fewer tokens, or use the HTML view"
        )
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    figure = _figure(6.4, 1.3 + 0.21 * n)
    axes = figure.add_subplot()
    axes.set_xlim(0, 1)
    axes.set_ylim(n - 0.5, -0.9)
    axes.axis("off")
    k = layers.index(layer)
    for head in shown:
        weights = maps[k, heads.index(head)]  # (T, T)
        rows, columns = np.nonzero(weights >= min_weight)
        segments_xy = [[(0.33, i), (0.67, j)] for i, j in zip(rows, columns, strict=True)]
        rgba = [(*to_rgb(_colour(head)), min(1.0, float(weights[i, j])))
                for i, j in zip(rows, columns, strict=True)]  # fmt: skip
        axes.add_collection(LineCollection(segments_xy, colors=rgba, linewidths=1.5))
    colours = _token_colours(n, special, segments)
    for i, (item, colour) in enumerate(zip(items, colours, strict=True)):
        for x, align in ((0.31, "right"), (0.69, "left")):
            axes.text(x, i, str(item), ha=align, va="center", fontsize=9, color=colour,
                      parse_math=False)  # fmt: skip
    axes.text(0.31, -0.9, "from (query)", ha="right", va="bottom", fontsize=9, color="#555555")
    axes.text(0.69, -0.9, "to (key)", ha="left", va="bottom", fontsize=9, color="#555555")
    handles = [Patch(color=_colour(h), label=f"head {h}") for h in shown]
    if handles:
        figure.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    figure.suptitle(
        f"layer {layer}: attention weights ≥ {min_weight:g}, opacity = weight", fontsize=11
    )
    return _save(figure, Path(directory), stem, formats)


def model_view_figure(
    maps: np.ndarray,
    layers: Sequence[int],
    heads: Sequence[int],
    directory: str | Path,
    *,
    segments: np.ndarray | None = None,
    stem: str = "model-view",
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Every (layer, head) map as a small heatmap, layers down and heads across, on one
    colour scale from 0 to 1 (as bertviz's model view, but a file)."""
    maps = _check(maps, layers, heads)
    n_layers, n_heads, n, _ = maps.shape
    cell = 1.05 if n_heads <= 12 else 0.8
    figure = _figure(1.0 + cell * n_heads, 0.6 + cell * n_layers)
    grid = figure.add_gridspec(n_layers, n_heads)
    boundary = None
    if segments is not None and len(np.unique(segments)) > 1:
        boundary = int(np.argmax(np.asarray(segments) != segments[0])) - 0.5
    image = None
    for k, layer in enumerate(layers):
        for a, head in enumerate(heads):
            axes = figure.add_subplot(grid[k, a])
            image = axes.imshow(maps[k, a], vmin=0, vmax=1, cmap="Blues", interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if boundary is not None:
                axes.axhline(boundary, color="#d62728", linewidth=0.6, alpha=0.7)
                axes.axvline(boundary, color="#d62728", linewidth=0.6, alpha=0.7)
            if k == 0:
                axes.set_title(f"head {head}", fontsize=9)
            if a == 0:
                axes.set_ylabel(f"layer {layer}", fontsize=9)
    if image is not None:
        bar = figure.colorbar(image, ax=figure.axes, shrink=0.6, pad=0.01)
        bar.ax.tick_params(labelsize=8)
        bar.set_label("attention weight", fontsize=9)
    figure.suptitle(
        f"attention of {n} tokens, query rows down, keys across; layer k = the "
        "self-attention inside encoder layer k",
        fontsize=10,
    )
    return _save(figure, Path(directory), stem, formats)


def stats_heatmaps(table: Sequence[dict], directory: str | Path) -> list[Path]:
    """One layers × heads heatmap per statistic of `HeadStats.result()`, as
    `attention-MEASURE.png` and `.svg`; values written in the cells while they fit."""
    if not table:
        raise OptionError("no statistics to plot: the table is empty")
    layers = sorted({int(r["layer"]) for r in table})
    heads = sorted({int(r["head"]) for r in table})
    paths: list[Path] = []
    for name, definition in MEASURES.items():
        values = np.full((len(layers), len(heads)), np.nan)
        for row in table:
            if row[name] is not None:
                values[layers.index(int(row["layer"])), heads.index(int(row["head"]))] = row[name]
        width = min(16.0, 2.2 + 0.55 * len(heads))
        figure = _figure(width, 1.6 + 0.45 * len(layers))
        axes = figure.add_subplot()
        image = axes.imshow(values, cmap="viridis", aspect="auto", interpolation="nearest")
        axes.set_xticks(range(len(heads)), [str(h) for h in heads], fontsize=9)
        axes.set_yticks(range(len(layers)), [str(v) for v in layers], fontsize=9)
        axes.set_xlabel("head", fontsize=10)
        axes.set_ylabel(_LAYER_LABEL, fontsize=10)
        if len(heads) <= 16 and len(layers) <= 24:
            _annotate(axes, values)
        bar = figure.colorbar(image, ax=axes, shrink=0.9)
        bar.ax.tick_params(labelsize=8)
        axes.set_title("\n".join(textwrap.wrap(f"{name}: {definition}", 90)), fontsize=9)
        paths += _save(figure, Path(directory), f"attention-{name}")
    return paths


def _annotate(axes, values: np.ndarray) -> None:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return
    low, high = float(finite.min()), float(finite.max())
    digits = 2 if max(abs(low), abs(high)) < 10 else 0
    middle = (low + high) / 2
    for (i, j), value in np.ndenumerate(values):
        if math.isfinite(value):
            colour = "black" if value > middle else "white"
            axes.text(j, i, f"{value:.{digits}f}", ha="center", va="center", fontsize=8,
                      color=colour)  # fmt: skip


def rollout_figure(
    rollout: np.ndarray,
    items: Sequence[str],
    layers: Sequence[int],
    directory: str | Path,
    *,
    query: int = 0,
    stem: str = "rollout",
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Attention rollout: the last layer's rolled-out map (T × T) and, for every layer, the row
    of token `query` (default the first, [CLS]): where its information has come from."""
    rollout = np.asarray(rollout)
    if rollout.ndim != 3 or rollout.shape[0] != len(layers) or rollout.shape[1] != rollout.shape[2]:
        raise OptionError(f"rollout must have the shape ({len(layers)}, T, T): got {rollout.shape}")
    n = rollout.shape[-1]
    if not 0 <= query < n:
        raise OptionError(f"query token {query} is out of range: the text has {n} tokens")
    labelled = n <= 60
    size = min(9.0, 2.5 + 0.12 * n)
    figure = _figure(2 * size + 1.0, size + 0.6)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    image = left.imshow(rollout[-1], cmap="Blues", vmin=0, interpolation="nearest")
    left.set_title(f"rolled out to layer {layers[-1]}", fontsize=10)
    left.set_xlabel("from input token (key)", fontsize=9)
    left.set_ylabel("token at that layer (query)", fontsize=9)
    figure.colorbar(image, ax=left, shrink=0.8).ax.tick_params(labelsize=8)
    rows = rollout[:, query, :]  # (K, T)
    image = right.imshow(rows, cmap="Blues", vmin=0, aspect="auto", interpolation="nearest")
    right.set_title(
        f"row of token {query} ({_short(items[query])}) by layer", fontsize=10, parse_math=False
    )
    right.set_yticks(range(len(layers)), [str(v) for v in layers], fontsize=9)
    right.set_ylabel(_LAYER_LABEL, fontsize=9)
    right.set_xlabel("input token", fontsize=9)
    figure.colorbar(image, ax=right, shrink=0.8).ax.tick_params(labelsize=8)
    for axes in (left, right):
        if labelled:
            labels = [_short(item) for item in items]
            axes.set_xticks(range(n), labels, fontsize=8, rotation=90, parse_math=False)
        else:
            axes.tick_params(labelsize=8)
    if labelled:
        left.set_yticks(range(n), [_short(item) for item in items], fontsize=8, parse_math=False)
    figure.suptitle("attention rollout (Abnar & Zuidema, 2020)", fontsize=11)
    return _save(figure, Path(directory), stem, formats)


def _short(item: str, limit: int = 14) -> str:
    item = str(item)
    return item if len(item) <= limit else item[: limit - 1] + "…"
