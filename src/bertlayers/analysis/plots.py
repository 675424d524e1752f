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
    metric = report.metric
    layers = [s for s in report.scores if s.kind == "layer"]
    combined = [s for s in report.scores if s.kind == "combined"]
    baselines = [s for s in report.scores if s.kind == "baseline"]
    figure = _figure(7, 4.2)
    axes = figure.add_subplot()
    x = [s.layer for s in layers]
    axes.errorbar(
        x,
        [s.mean[metric] for s in layers],
        yerr=[s.std[metric] for s in layers],
        marker="o",
        capsize=3,
        color=_PALETTE[0],
        label="single layer",
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
    for style, s in zip(("--", ":"), baselines, strict=False):
        axes.axhline(s.mean[metric], linestyle=style, color="#555555", label=f"{s.name} baseline")
    best = report.score(report.best)
    best_x = best.layer if best.kind == "layer" else right + combined.index(best)
    axes.annotate(
        "best",
        (best_x, best.mean[metric]),
        textcoords="offset points",
        xytext=(0, 10),
        ha="center",
        fontsize=9,
    )
    ticks = x + [right + i for i in range(len(combined))]
    labels = [str(v) for v in x] + [_short(s.name) for s in combined]
    axes.set_xticks(ticks, labels)
    axes.set_xlabel("layer (0 = embedding output)")
    axes.set_ylabel(metric.replace("_", " "))
    axes.set_title(
        title or f"probe: {metric.replace('_', ' ')} by layer ({report.task['evaluation']})"
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return _save(figure, Path(directory), "probe")


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
        if column == 0:
            axes.legend(fontsize=7, loc="best")
    figure.suptitle(f"{report.task['kind']}: by layer, 95% bootstrap intervals")
    return _save(figure, Path(directory), "probe")


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

    figure = _figure(4.6, 4)
    axes = figure.add_subplot()
    cka = np.asarray(report.cka)
    image = axes.imshow(cka, vmin=0, vmax=1, cmap="viridis")
    axes.set_xticks(range(len(layers)), [str(v) for v in layers])
    axes.set_yticks(range(len(layers)), [str(v) for v in layers])
    axes.set_xlabel("layer")
    axes.set_ylabel("layer")
    axes.set_title("linear CKA between layers", fontsize=10)
    if len(layers) <= 14:
        for i in range(len(layers)):
            for j in range(len(layers)):
                colour = "black" if cka[i, j] > 0.6 else "white"
                axes.text(
                    j, i, f"{cka[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour
                )
    figure.colorbar(image, ax=axes, shrink=0.8)
    return paths + _save(figure, directory, "cka")


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
