"""Plots of probe scores, layer geometry and projections (matplotlib, no display needed),
and an export of the vectors to TensorBoard's embedding projector.

Every plot is written as PNG and SVG; figures are built without pyplot, so nothing here
touches global matplotlib state or needs a screen.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..outputs import write_atomically, write_text_atomically
from .geometry import GeometryReport
from .matching import MatchReport
from .probing import ProbeData, ProbeReport
from .tradeoff import TradeoffReport

_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, directory: Path, stem: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.png", directory / f"{stem}.svg"]
    write_atomically(
        paths[0], lambda p: figure.savefig(p, format="png", metadata={"Software": None})
    )
    write_atomically(paths[1], lambda p: figure.savefig(p, format="svg", metadata={"Date": None}))
    return paths


def plot_probe(report: ProbeReport, directory: str | Path, title: str | None = None) -> list[Path]:
    """Score vs layer with spread across folds, the combined layers and the baselines."""
    return _save(probe_figure(report, title), Path(directory), "probe")


def probe_figure(report: ProbeReport, title: str | None = None):
    """The figure `plot_probe` writes. The y axis spans the probes' scores with their error
    bars (a baseline far below them is named in the legend, not drawn); the best probe is
    ringed and named in the legend; the legend sits outside the axes, covering nothing."""
    from matplotlib.lines import Line2D

    metric = report.metric
    layers = [s for s in report.scores if s.kind == "layer"]
    combined = [s for s in report.scores if s.kind == "combined"]
    baselines = [s for s in report.scores if s.kind == "baseline"]
    test_split = report.task.get("evaluation") == "test set"
    figure = _figure(8.2, 4.2)
    axes = figure.add_subplot()
    x = [s.layer for s in layers]
    axes.errorbar(
        x,
        [s.mean[metric] for s in layers],
        yerr=[s.std[metric] for s in layers],
        marker="o",
        capsize=3,
        color=_PALETTE[0],
        label="single layer" if test_split else "single layer (± std over folds)",
    )
    right = (max(x) if x else 0) + 1
    for offset, s in enumerate(combined):
        axes.errorbar(
            [right + offset],
            [s.mean[metric]],
            yerr=[s.std[metric]],
            marker="s",
            capsize=3,
            linestyle="none",
            color=_PALETTE[2 + offset],
            label=s.name,
        )
    probes = layers + combined
    low, high = score_limits(
        [s.mean[metric] - s.std[metric] for s in probes],
        [s.mean[metric] + s.std[metric] for s in probes],
        [s.mean[metric] for s in baselines],
    )
    handles, labels = axes.get_legend_handles_labels()
    for style, s in zip(("--", ":"), baselines, strict=False):
        value = s.mean[metric]
        if low <= value <= high:
            line = axes.axhline(value, linestyle=style, color="#555555")
            handles.append(line)
            labels.append(f"{s.name} baseline ({value:.3f})")
        else:
            handles.append(Line2D([], [], linestyle=style, color="#555555"))
            labels.append(f"{s.name} baseline: {value:.3f} (off the axis)")
    best = report.score(report.best)
    best_x = best.layer if best.kind == "layer" else right + combined.index(best)
    ring = axes.plot(
        [best_x], [best.mean[metric]], marker="o", markersize=14, markerfacecolor="none",
        markeredgecolor="#d62728", markeredgewidth=2, linestyle="none",
    )[0]  # fmt: skip
    handles.append(ring)
    labels.append(f"best: {report.best} ({best.mean[metric]:.3f})")
    axes.set_ylim(low, high)
    ticks = x + [right + i for i in range(len(combined))]
    names = [str(v) for v in x] + [_short(s.name) for s in combined]
    axes.set_xticks(ticks, names)
    axes.set_xlabel("layer (0 = embedding output)")
    axes.set_ylabel(metric.replace("_", " "))
    axes.set_title(
        title or f"probe: {metric.replace('_', ' ')} by layer ({report.task['evaluation']})"
    )
    axes.grid(alpha=0.3)
    figure.legend(handles, labels, fontsize=8, loc="outside right upper")
    return figure


def score_limits(
    lows: list[float], highs: list[float], others: list[float] = (), reach: float = 0.5
) -> tuple[float, float]:
    """y limits for scores: the range of `lows`..`highs` padded by a tenth, widened to take in
    each of `others` (baselines) lying within `reach` of that range's span of it, so that the
    scores compared fill most of the axis instead of its top fifth."""
    low, high = min(lows), max(highs)
    span = max(high - low, 0.01)
    for value in others:
        if low - reach * span <= value <= high + reach * span:
            low, high = min(low, value), max(high, value)
    pad = 0.1 * max(high - low, 0.01)
    return low - pad, high + pad


def plot_matching(report: MatchReport, directory: str | Path) -> list[Path]:
    """Each metric by layer, one line per pooling and post-processing with its 95% bootstrap
    band, the combined layers to the right and the baselines as horizontal lines."""
    metrics = report.metrics()
    n_columns = min(3, len(metrics))
    n_rows = math.ceil(len(metrics) / n_columns)
    figure = _figure(4.4 * n_columns, 3.8 * n_rows)
    series: dict[tuple[str | None, str | None], list] = {}
    for s in report.scores:
        if s.kind != "baseline":
            series.setdefault((s.pooling, s.post), []).append(s)
    baselines = [s for s in report.scores if s.kind == "baseline"]
    for column, metric in enumerate(metrics):
        axes = figure.add_subplot(n_rows, n_columns, column + 1)
        right = 0
        for i, ((pooling, post), rows) in enumerate(series.items()):
            color = _PALETTE[i % len(_PALETTE)]
            label = pooling if post in (None, "none") else f"{pooling} +{post}"
            layers = [s for s in rows if s.kind == "layer"]
            x = [s.layer for s in layers]
            axes.plot(x, [s.values[metric] for s in layers], marker="o", color=color, label=label)
            axes.fill_between(
                x,
                [s.ci[metric][0] for s in layers],
                [s.ci[metric][1] for s in layers],
                color=color,
                alpha=0.15,
            )
            combined = [s for s in rows if s.kind == "combined"]
            right = (max(x) if x else 0) + 1
            for offset, s in enumerate(combined):
                value, (low, high) = s.values[metric], s.ci[metric]
                axes.errorbar(
                    [right + offset + 0.08 * i],
                    [value],
                    yerr=[[value - low], [high - value]],
                    marker="s",
                    capsize=3,
                    linestyle="none",
                    color=color,
                )
        first = next(iter(series.values()), [])
        x = [s.layer for s in first if s.kind == "layer"]
        combined = [s for s in first if s.kind == "combined"]
        for style, s in zip(("--", ":", "-."), baselines, strict=False):
            axes.axhline(s.values[metric], linestyle=style, color="#555555", label=s.name)
        axes.set_xticks(
            x + [right + i for i in range(len(combined))],
            [str(v) for v in x] + [_short(s.name) for s in combined],
            fontsize=8,
            rotation=35,
        )
        axes.set_xlabel("layer (0 = embedding output)", fontsize=9)
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(  # outside the panels: it covers no line, band or baseline
        handles, labels, fontsize=8, loc="outside lower center", ncols=min(len(labels), 5)
    )
    figure.suptitle(f"{report.task['kind']}: by layer, 95% bootstrap intervals")
    return _save(figure, Path(directory), "probe")


def plot_tradeoff(report: TradeoffReport, directory: str | Path) -> list[Path]:
    """Score (with its interval band) and measured texts/s against K, the layers kept, in
    two panels sharing K; the size on disk beside each speed; the K chosen marked in both."""
    return _save(tradeoff_figure(report), Path(directory), "tradeoff")


def tradeoff_figure(report: TradeoffReport):
    """The figure `plot_tradeoff` writes; one legend below both panels."""
    metric = report.task["metric"]
    rows = report.rows
    ks = [r.k for r in rows]
    figure = _figure(7.5, 6.4)
    top, bottom = figure.subplots(2, 1, sharex=True)
    band = "± std over folds" if report.task.get("symmetric") else "95% bootstrap interval"
    top.fill_between(
        ks, [r.low for r in rows], [r.high for r in rows], color=_PALETTE[0], alpha=0.18,
        label=f"interval of layer K's score ({band})",
    )  # fmt: skip
    top.plot(ks, [r.score for r in rows], marker="o", color=_PALETTE[0], label="layer K's score")
    floor = report.best["score"] - report.task["tolerance"]
    top.axhline(
        floor, linestyle="--", color="#555555",
        label=f"best layer ({report.best['layer']}: {report.best['score']:.3f}) − "
        f"tolerance {report.task['tolerance']:g}",
    )  # fmt: skip
    low, high = score_limits([r.low for r in rows], [r.high for r in rows], [floor])
    top.set_ylim(low, high)
    top.set_ylabel(metric.replace("_", " "))
    rates = [r.texts_per_s for r in rows]
    spread = [[r.texts_per_s - min(r.rounds_texts_per_s) for r in rows],
              [max(r.rounds_texts_per_s) - r.texts_per_s for r in rows]]  # fmt: skip
    rounds = report.measure.get("rounds")
    bottom.errorbar(
        ks, rates, yerr=spread, marker="s", capsize=3, color=_PALETTE[1],
        label=f"texts/s of the cut model (median of {rounds} rounds; bars: min to max)",
        clip_on=True,
    )  # fmt: skip
    for r in rows:
        bottom.annotate(
            f"{r.size_bytes / 1e6:.0f} MB", (r.k, r.texts_per_s), textcoords="offset points",
            xytext=(8, 6), ha="left", fontsize=8,
        )  # fmt: skip
    # the axis follows the medians: a round far off (another job on a shared machine) is
    # cut at the top rather than flattening every median (tradeoff.json keeps each round)
    bottom.set_ylim(0, max(rates) * 1.6)
    bottom.set_ylabel("texts / s")
    bottom.set_xlabel("K: encoder layers kept (size on disk beside each point)")
    bottom.set_xticks(ks, [str(k) for k in ks])
    bottom.set_xlim(min(ks) - 0.5, max(ks) + 0.8)
    if report.chosen is not None:
        for axes in (top, bottom):
            axes.axvline(report.chosen, color="#d62728", linewidth=1.5, alpha=0.7,
                         label=f"chosen: K = {report.chosen}")  # fmt: skip
    handles, labels = top.get_legend_handles_labels()
    more = bottom.get_legend_handles_labels()
    for handle, label in zip(*more, strict=True):
        if label not in labels:
            handles.append(handle)
            labels.append(label)
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
    figure.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=2)
    figure.suptitle(
        f"{report.task['kind']}: {metric.replace('_', ' ')} and speed of the model cut to K layers"
    )
    return figure


def _short(name: str) -> str:
    return {"mean of all": "mean", "scalar mix": "mix"}.get(
        name, name.replace("concat last ", "cat-").replace("mean of ", "avg ")
    )


def plot_geometry(report: GeometryReport, directory: str | Path) -> list[Path]:
    """Anisotropy, self- and intra-sentence similarity, norms by layer; and the CKA heatmap."""
    directory = Path(directory)
    layers = [row.layer for row in report.layers]
    panels = [
        ("anisotropy", ["anisotropy"], "mean cosine, random pairs"),
        ("self-similarity", ["self_similarity", "self_similarity_adjusted"], "mean cosine"),
        ("intra-sentence similarity", ["intra_sentence", "intra_sentence_adjusted"], "cosine"),
        ("mean norm", ["norm"], "L2 norm"),
    ]
    present = [p for p in panels if getattr(report.layers[0], p[1][0]) is not None]
    figure = _figure(3.3 * len(present), 3.2)
    for i, (title, names, ylabel) in enumerate(present):
        axes = figure.add_subplot(1, len(present), i + 1)
        for j, name in enumerate(names):
            axes.plot(
                layers,
                [getattr(row, name) for row in report.layers],
                marker="o",
                color=_PALETTE[j],
                label="adjusted for anisotropy" if name.endswith("adjusted") else "raw",
            )
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("layer")
        axes.set_ylabel(ylabel)
        axes.set_xticks(layers)
        axes.grid(alpha=0.3)
        if len(names) > 1:
            axes.legend(fontsize=7)
    paths = _save(figure, directory, "geometry")

    return paths + _save(cka_figure(report), directory, "cka")


CKA_FONT = 10  # points: cell numbers legible where the report shows the figure


def cka_figure(report: GeometryReport):
    """The linear CKA heatmap, its cells numbered (up to 14 layers) in `CKA_FONT` points: the
    figure grows with the layers so that each number fits its cell."""
    layers = [row.layer for row in report.layers]
    side = max(4.6, 0.55 * len(layers) + 1.8)
    figure = _figure(side + 0.9, side)
    axes = figure.add_subplot()
    cka = np.asarray(report.cka)
    image = axes.imshow(cka, vmin=0, vmax=1, cmap="viridis")
    axes.set_xticks(range(len(layers)), [str(v) for v in layers])
    axes.set_yticks(range(len(layers)), [str(v) for v in layers])
    axes.set_xlabel("layer")
    axes.set_ylabel("layer")
    axes.set_title("linear CKA between layers", fontsize=11)
    if len(layers) <= 14:
        for i in range(len(layers)):
            for j in range(len(layers)):
                colour = "black" if cka[i, j] > 0.6 else "white"
                axes.text(
                    j, i, f"{cka[i, j]:.2f}", ha="center", va="center", fontsize=CKA_FONT,
                    color=colour,
                )  # fmt: skip
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure


def _project(vectors: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise OptionError(
                "{opt:projection=umap} needs the umap-learn package (pip install umap-learn)"
            ) from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(vectors)


def plot_projection(
    data: ProbeData,
    directory: str | Path,
    method: str = "pca",
    seed: int = 0,
    max_points: int = 2000,
    max_classes: int = 10,
) -> list[Path]:
    """A 2-D projection (PCA or UMAP) of the vectors of each layer, coloured by label."""
    if method not in ("pca", "umap"):
        raise OptionError(f"unknown projection '{method}': use pca, umap or none")
    rng = np.random.default_rng(seed)
    rows = np.arange(len(data.labels))
    if len(rows) > max_points:
        rows = np.sort(rng.choice(rows, max_points, replace=False))
    labels = data.labels[rows].astype(str)
    values, counts = np.unique(labels, return_counts=True)
    shown = list(values[np.argsort(-counts, kind="stable")][:max_classes])
    n = len(data.layers)
    columns = min(n, 4)
    lines = math.ceil(n / columns)
    figure = _figure(3.2 * columns, 3.0 * lines + 0.4)
    for position, layer in enumerate(data.layers):
        axes = figure.add_subplot(lines, columns, position + 1)
        points = _project(data.vectors[rows, position].astype(np.float64), method, seed)
        other = ~np.isin(labels, shown)
        if other.any():
            axes.scatter(*points[other].T, s=4, color="#cccccc", label="other", alpha=0.6)
        for k, label in enumerate(shown):
            keep = labels == label
            axes.scatter(*points[keep].T, s=4, color=_PALETTE[k % 10], label=label, alpha=0.7)
        axes.set_title(f"layer {layer}", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
    handles, names = figure.axes[0].get_legend_handles_labels()
    figure.legend(
        handles,
        names,
        loc="outside lower center",
        ncols=min(len(names), 6),
        fontsize=8,
        markerscale=3,
    )
    figure.suptitle(f"{method.upper()} of each layer, coloured by label ({len(rows)} points)")
    return _save(figure, Path(directory), "projection")


def export_tensorboard(data: ProbeData, directory: str | Path, max_points: int = 10000) -> Path:
    """Write one tensor per layer with the labels as metadata, for TensorBoard's projector.

    The layout is the one `torch.utils.tensorboard.SummaryWriter.add_embedding` writes:
    `projector_config.pbtxt` naming `LAYER/tensors.tsv` and `LAYER/metadata.tsv`, so
    `tensorboard --logdir DIR` (Projector tab) or projector.tensorflow.org loads it.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = np.arange(len(data.labels))[:max_points]
    metadata = ["label\titem"] + [
        f"{_tsv(str(data.labels[i]))}\t{_tsv(data.items[i][:200])}" for i in rows
    ]
    config = []
    for position, layer in enumerate(data.layers):
        name = f"layer_{layer:02d}"
        (out / name).mkdir(exist_ok=True)
        tensors = data.vectors[rows, position]
        write_atomically(
            out / name / "tensors.tsv",
            lambda p, t=tensors: np.savetxt(p, t, delimiter="\t", fmt="%.6g"),
        )
        write_text_atomically(out / name / "metadata.tsv", "\n".join(metadata) + "\n")
        config.append(
            "embeddings {\n"
            f'  tensor_name: "layer {layer}"\n'
            f'  tensor_path: "{name}/tensors.tsv"\n'
            f'  metadata_path: "{name}/metadata.tsv"\n'
            "}\n"
        )
    config_path = out / "projector_config.pbtxt"
    write_text_atomically(config_path, "".join(config))
    return config_path


def _tsv(text: str) -> str:
    return " ".join(text.replace("\t", " ").split()) or "-"
