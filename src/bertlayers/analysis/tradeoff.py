"""The depth trade-off: for each K, the probe's score of layer K (with its interval), the
measured throughput and the size on disk of the model cut to its first K layers, and the
smallest K whose score is within a tolerance of the best layer's.

Layer K of the full model is exactly the last layer of the model cut to K layers
(`bertlayers truncate` checks it), so the score per K is read from the probe's own per-layer
rows; the speed and size are what the command line measured on real cut models. This module
only does the bookkeeping (no model code): `depth_scores` reads a probe's results,
`TradeoffReport` holds the figures and writes them as a table, JSON and CSV.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import asdict, dataclass, field

from .. import __version__
from ..errors import InputError

DEFAULT_TOLERANCE = 0.01  # one point of macro-F1 (or of any score in 0..1)
EPSILON = 1e-12  # a score exactly `tolerance` below the best is within it


@dataclass(frozen=True)
class DepthScores:
    """The score of each single layer K >= 1 of a probe run, and how to read it."""

    metric: str
    interval: str  # what `low` and `high` are
    series: str | None  # matching: the pooling (and post-processing) whose rows were read
    scores: dict[int, tuple[float, float, float]]  # K -> (score, low, high)


def depth_scores(probe: dict) -> DepthScores:
    """The per-layer rows of a probe's results (`probe.json`) as scores per K.

    Classification: each layer's mean over folds, its interval the mean ± the standard
    deviation across folds (none on a single test split). Similarity and retrieval: the rows
    of the pooling and post-processing of the best row, with their 95% bootstrap intervals.
    Layer 0 (the embedding output) is no cut model and is left out, as are undefined scores.
    """
    metric = probe["metric"]
    kind = probe["task"].get("kind", "classify")
    scores: dict[int, tuple[float, float, float]] = {}
    if kind in ("similarity", "retrieval"):
        best = next(s for s in probe["scores"] if s.get("label") == probe["best"])
        pooling, post = best.get("pooling"), best.get("post")
        for s in probe["scores"]:
            if s["kind"] != "layer" or (s.get("pooling"), s.get("post")) != (pooling, post):
                continue
            value, (low, high) = s["values"].get(metric), s["ci"].get(metric) or (None, None)
            if s["layer"] >= 1 and _finite(value, low, high):
                scores[s["layer"]] = (value, low, high)
        series = pooling if post in (None, "none") else f"{pooling} +{post}"
        interval = f"95% percentile bootstrap interval ({probe['task'].get('bootstrap')} resamples)"
    else:
        test_split = probe["task"].get("evaluation") == "test set"
        for s in probe["scores"]:
            if s["kind"] == "layer" and s["layer"] >= 1 and _finite(s["mean"][metric]):
                mean, spread = s["mean"][metric], s["std"][metric]
                scores[s["layer"]] = (mean, mean - spread, mean + spread)
        series = None
        interval = (
            "none: one test split"
            if test_split
            else f"mean ± standard deviation over the {probe['task'].get('evaluation')} folds"
        )
    if not scores:
        raise InputError(
            "the probe scored no encoder layer (1..L): a trade-off needs the score of each "
            "layer K it cuts to (probe every layer, e.g. {opt:layers=all})"
        )
    return DepthScores(metric, interval, series, dict(sorted(scores.items())))


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def choose_depth(
    scores: dict[int, float], candidates: list[int], tolerance: float
) -> tuple[int, int | None]:
    """(the best layer of `scores`, the smallest K of `candidates` scoring at least the best
    minus `tolerance`; None when no candidate does). Ties for the best go to the shallower."""
    best = min(scores, key=lambda k: (-scores[k], k))
    floor = scores[best] - tolerance - EPSILON
    within = [k for k in sorted(candidates) if scores[k] >= floor]
    return best, (within[0] if within else None)


@dataclass
class TradeoffRow:
    """One K: the score of layer K, and the model cut to K layers as measured."""

    k: int
    score: float
    low: float
    high: float
    texts_per_s: float  # median of the rounds
    rounds_texts_per_s: list[float]
    size_bytes: int  # the cut model directory on disk
    model: dict  # the cut model: its weights' sha256, files, the exactness check


@dataclass
class TradeoffReport:
    """Score, speed and size per K, and the K chosen: a table, JSON, CSV or a plot."""

    task: dict  # kind, data, metric, interval, series, tolerance
    best: dict  # {"layer", "score"}: the best layer of all those scored
    chosen: int | None
    rows: list[TradeoffRow]
    source: dict  # the model that was cut
    measure: dict  # what was timed, and how
    machine: dict  # where: CPU, cores, torch, date, git commit, the command
    notes: list[str] = field(default_factory=list)

    def row(self, k: int) -> TradeoffRow:
        return next(r for r in self.rows if r.k == k)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "best": self.best,
            "chosen": self.chosen,
            "rows": [asdict(r) for r in self.rows],
            "source": self.source,
            "measure": self.measure,
            "machine": self.machine,
            "notes": self.notes,
            "bertlayers_version": __version__,
        }

    def to_csv(self) -> str:
        """One line per K; the machine and the command in `#` comment lines above."""
        out = io.StringIO()
        for key in ("cpu", "cores", "torch", "date", "git_commit", "command"):
            out.write(f"# {key}: {self.machine.get(key)}\n")
        writer = csv.writer(out, lineterminator="\n")
        metric = self.task["metric"]
        writer.writerow(
            ["k", metric, f"{metric}_low", f"{metric}_high", "texts_per_s", "size_bytes",
             "weights_sha256", "chosen"]
        )  # fmt: skip
        for r in self.rows:
            writer.writerow(
                [r.k, f"{r.score:.4f}", f"{r.low:.4f}", f"{r.high:.4f}", f"{r.texts_per_s:.1f}",
                 r.size_bytes, r.model.get("weights_sha256", ""), int(r.k == self.chosen)]
            )  # fmt: skip
        return out.getvalue()

    def summary(self) -> str:
        """One sentence: the K chosen, and what it buys against the deepest K measured."""
        tolerance, best = self.task["tolerance"], self.best
        said = f"the best layer, {best['layer']}, scores {best['score']:.3f} {self.task['metric']}"
        if self.chosen is None:
            return (
                f"{said}; no K measured is within {tolerance:g} of it (measure K = "
                f"{best['layer']} too)"
            )
        chosen, deepest = self.row(self.chosen), self.rows[-1]
        text = f"{said}; the smallest K within {tolerance:g} of it is K = {self.chosen}"
        if deepest.k != chosen.k:
            text += (
                f": {chosen.texts_per_s / deepest.texts_per_s:.2f}x the texts/s of K = "
                f"{deepest.k} at {chosen.size_bytes / deepest.size_bytes:.0%} of its size"
            )
        return text

    def table(self) -> str:
        metric = self.task["metric"]
        rounds = self.measure.get("rounds")
        header = f"{'K':>3}  {metric:>18}  {f'texts/s (median of {rounds})':>24}  {'size MB':>8}"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            mark = "  <- chosen" if r.k == self.chosen else ""
            spread = (r.high - r.low) / 2
            cell = f"{r.score:.3f} ± {spread:.3f}" if self.task.get("symmetric") else (
                f"{r.score:.3f} [{r.low:.3f}, {r.high:.3f}]")  # fmt: skip
            lines.append(
                f"{r.k:>3}  {cell:>18}  {r.texts_per_s:>24.1f}  {r.size_bytes / 1e6:>8.1f}{mark}"
            )
        return "\n".join([*lines, self.summary()])


def tradeoff_report(
    probe: dict,
    measured: dict[int, dict],
    tolerance: float,
    source: dict,
    measure: dict,
    machine: dict,
) -> TradeoffReport:
    """Put a probe's scores and the measurements of the cut models together.

    `measured[K]` holds `rounds_texts_per_s` (one figure per timed round), `size_bytes` and
    `model` (what identifies the cut model). The best layer is the best of every layer the
    probe scored; the K chosen is the smallest measured K within `tolerance` of it.
    """
    depth = depth_scores(probe)
    missing = sorted(set(measured) - set(depth.scores))
    if missing:
        raise InputError(f"no probe score for layer(s) {missing}: the trade-off cannot read them")
    plain = {k: v[0] for k, v in depth.scores.items()}
    best, chosen = choose_depth(plain, list(measured), tolerance)
    rows = []
    for k in sorted(measured):
        score, low, high = depth.scores[k]
        rates = [float(v) for v in measured[k]["rounds_texts_per_s"]]
        if not rates or min(rates) <= 0:
            raise InputError(f"K = {k}: no positive throughput was measured")
        rows.append(
            TradeoffRow(
                k, score, low, high, statistics.median(rates), rates,
                int(measured[k]["size_bytes"]), measured[k]["model"],
            )
        )  # fmt: skip
    task = {
        "kind": probe["task"].get("kind", "classify"),
        "data": probe["task"].get("data"),
        "metric": depth.metric,
        "interval": depth.interval,
        "symmetric": probe["task"].get("kind", "classify") == "classify",
        "series": depth.series,
        "tolerance": tolerance,
        "scored_layers": list(depth.scores),
    }
    report = TradeoffReport(
        task, {"layer": best, "score": plain[best]}, chosen, rows, source, measure, machine
    )
    if chosen is None:
        report.notes.append(report.summary())
    return report
