"""Per-layer geometry of a store (Ethayarajh 2019, "How contextual are contextualized word
representations?"), plus layer-to-layer linear CKA (Kornblith et al. 2019) and norms.

- anisotropy: mean cosine between random vectors of different texts (1 = all alike);
- self-similarity: mean cosine between occurrences of the same word in different contexts;
- intra-sentence similarity: mean cosine between a sentence's words and their mean;
- both also "adjusted": minus the layer's anisotropy, as the paper reports them.
Token and word stores give all of these; sentence stores give anisotropy, norms and CKA.
Samples are drawn with a seeded generator, so a run is repeatable.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import __version__
from ..errors import InputError
from ..results import RaggedEmbeddings, SentenceEmbeddings


@dataclass
class LayerGeometry:
    """One layer's row of a `GeometryReport`: anisotropy and mean norm, and at token and word
    level self- and intra-sentence similarity, raw and adjusted (see the module docstring)."""

    layer: int
    anisotropy: float
    norm: float
    self_similarity: float | None = None
    self_similarity_adjusted: float | None = None
    intra_sentence: float | None = None
    intra_sentence_adjusted: float | None = None


@dataclass
class GeometryReport:
    """Per-layer geometry rows and the CKA matrix between layers."""

    level: str
    layers: list[LayerGeometry]
    cka: list[list[float]]
    sample: dict
    provenance: dict = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "layers": [asdict(row) for row in self.layers],
            "cka": self.cka,
            "sample": self.sample,
            "provenance": self.provenance,
            "bertlayers_version": __version__,
        }

    def columns(self) -> list[str]:
        names = [n for n in LayerGeometry.__dataclass_fields__ if n != "layer"]
        return [n for n in names if getattr(self.layers[0], n) is not None]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = self.columns()
        writer.writerow(["layer", *columns])
        for row in self.layers:
            writer.writerow([row.layer, *[f"{getattr(row, c):.4f}" for c in columns]])
        return out.getvalue()

    def table(self) -> str:
        columns = self.columns()
        short = {
            "anisotropy": "anisotropy",
            "norm": "mean norm",
            "self_similarity": "self-sim",
            "self_similarity_adjusted": "self-sim adj",
            "intra_sentence": "intra-sent",
            "intra_sentence_adjusted": "intra-sent adj",
        }
        header = f"{'layer':<7}" + "".join(f"{short[c]:>15}" for c in columns)
        lines = [header, "-" * len(header)]
        for row in self.layers:
            lines.append(f"{row.layer:<7}" + "".join(f"{getattr(row, c):>15.4f}" for c in columns))
        return "\n".join(lines)


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two views `(n, d1)`, `(n, d2)` of the same n examples."""
    x = x.astype(np.float64) - x.mean(axis=0)
    y = y.astype(np.float64) - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _pairs_from_different_texts(
    groups: np.ndarray, n_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, len(groups), n_pairs * 2)
    b = rng.integers(0, len(groups), n_pairs * 2)
    keep = groups[a] != groups[b]
    return a[keep][:n_pairs], b[keep][:n_pairs]


def _occurrences(items: list[str], groups: np.ndarray, rng, min_count: int, per_word: int):
    """Rows of each word type seen at least `min_count` times in two or more texts."""
    rows: dict[str, list[int]] = defaultdict(list)
    for row, item in enumerate(items):
        word = item.lower()
        if any(ch.isalnum() for ch in word) and not word.startswith("##"):
            rows[word].append(row)
    chosen = []
    for word in sorted(rows):
        found = np.asarray(rows[word])
        if len(found) >= min_count and len(set(groups[found].tolist())) > 1:
            if len(found) > per_word:
                found = np.sort(rng.choice(found, per_word, replace=False))
            chosen.append(found)
    return chosen


def analyze(
    result: SentenceEmbeddings | RaggedEmbeddings,
    seed: int = 0,
    pairs: int = 5000,
    max_rows: int = 5000,
    min_count: int = 5,
    per_word: int = 20,
) -> GeometryReport:
    """Per-layer anisotropy, self- and intra-sentence similarity, norms and linear CKA.

    `pairs` random pairs measure anisotropy; words seen `min_count`+ times (up to `per_word`
    occurrences each) measure self-similarity; CKA and norms use up to `max_rows` rows.
    """
    if result.provenance.get("combine", "stack") != "stack":
        raise InputError(
            "the store holds combined layers: analyze needs each layer ({opt:combine=stack})"
        )
    rng = np.random.default_rng(seed)
    ragged = isinstance(result, RaggedEmbeddings)
    if ragged:
        groups = np.repeat(np.arange(len(result)), np.diff(result.offsets))
    else:
        groups = np.arange(len(result.ids))
    n_rows = len(groups)
    if n_rows < 2 or int(groups.max()) < 1:
        raise InputError("analyze needs vectors from at least two texts")
    a, b = _pairs_from_different_texts(groups, pairs, rng)
    sample = np.sort(rng.choice(n_rows, min(max_rows, n_rows), replace=False))
    occurrences = _occurrences(result.items, groups, rng, min_count, per_word) if ragged else []
    sentences = []
    if ragged:
        offsets = result.offsets
        multi = [i for i in range(len(result)) if offsets[i + 1] - offsets[i] > 1]
        if len(multi) > 2000:
            multi = sorted(rng.choice(multi, 2000, replace=False).tolist())
        sentences = [(int(offsets[i]), int(offsets[i + 1])) for i in multi]

    rows: list[LayerGeometry] = []
    views: list[np.ndarray] = []
    for position, layer in enumerate(result.layers):
        vectors = np.asarray(result.source.layer(position))
        unit = _unit(vectors)
        anisotropy = float(np.mean(np.sum(unit[a] * unit[b], axis=1)))
        row = LayerGeometry(
            layer=layer,
            anisotropy=anisotropy,
            norm=float(np.linalg.norm(vectors[sample].astype(np.float64), axis=1).mean()),
        )
        if occurrences:
            means = []
            for found in occurrences:
                u = unit[found]
                gram = u @ u.T
                n = len(found)
                means.append((gram.sum() - np.trace(gram)) / (n * (n - 1)))
            row.self_similarity = float(np.mean(means))
            row.self_similarity_adjusted = row.self_similarity - anisotropy
        if sentences:
            values = []
            for start, end in sentences:
                mean = _unit(vectors[start:end].mean(axis=0, keepdims=True))[0]
                values.append(float(np.mean(unit[start:end] @ mean)))
            row.intra_sentence = float(np.mean(values))
            row.intra_sentence_adjusted = row.intra_sentence - anisotropy
        rows.append(row)
        views.append(vectors[sample].astype(np.float64))
    k = len(views)
    cka = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            cka[i, j] = cka[j, i] = linear_cka(views[i], views[j])
    return GeometryReport(
        level=result.level,
        layers=rows,
        cka=[[round(float(v), 4) for v in line] for line in cka],
        sample={
            "seed": seed,
            "rows": n_rows,
            "anisotropy_pairs": len(a),
            "cka_rows": len(sample),
            "word_types": len(occurrences),
            "sentences": len(sentences),
        },
        provenance=result.provenance,
    )
