"""Numbers from attention maps: words from pieces, rollout, per-head statistics over a corpus,
norm-weighted attention. Numpy only: the maps come from the model side.

A text's maps are `maps: (K, A, T, T)`, K selected layers, A selected heads, T tokens with the
special ones; `maps[k, a, i, j]` is the attention of query token i to key token j (rows sum
to 1). Layer k (1..L) is the self-attention inside encoder layer k; layer 0 has none.
"""

from __future__ import annotations

import csv
import io
import json
import math
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..maps import merge_items, merge_words  # noqa: F401 (the words of a text's maps)
from ..outputs import write_text_atomically

# What each per-head statistic is, in one sentence: the report and the docs print these.
MEASURES: dict[str, str] = {
    "entropy": "Entropy of a query token's attention, -Σ_j α_ij ln α_ij in nats (0 ln 0 = 0): "
    "0 when it all goes to one token, ln T when spread evenly.",
    "to_cls": "Attention to the first token ([CLS] or <s>), α_i0.",
    "to_sep": "Attention to the special tokens other than the first ([SEP], </s>; a pair's "
    "separators summed together).",
    "to_punct": "Attention to punctuation, summed over the non-special tokens whose text (less a "
    "##, Ġ or ▁ marker) is all Unicode punctuation.",
    "to_prev": "Attention to the previous token, α_i,i-1 (the first row, having none, is not "
    "counted).",
    "to_next": "Attention to the next token, α_i,i+1 (the last row, having none, is not counted).",
    "to_self": "Attention of a token to itself, α_ii.",
    "distance": "Mean attention distance Σ_j α_ij |i-j|, in tokens.",
}

_ROW_SUM_TOLERANCE = 1e-3


def _check_maps(maps: np.ndarray, what: str = "maps") -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
        raise OptionError(f"{what} must have the shape (layers, heads, T, T): got {maps.shape}")
    return maps


def _check_vector(values, length: int, name: str, dtype) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.shape != (length,):
        raise OptionError(f"{name} must have one value per token ({length}): got {array.shape}")
    return array


# ---------------------------------------------------------------- rollout


def rollout(
    maps: np.ndarray, layers: Sequence[int], heads: Sequence[int], num_heads: int
) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): Â_k = (mean over heads of A_k + I) / 2 with
    rows renormalised, R_1 = Â_1 and R_k = Â_k @ R_{k-1}; returns R for each layer (K, T, T).

    The product only means something from the first layer up with every head, so `maps` must
    hold all `num_heads` heads of the layers 1..K in order.
    """
    maps = _check_maps(maps)
    layers, heads = [int(v) for v in layers], [int(v) for v in heads]
    if maps.shape[:2] != (len(layers), len(heads)):
        raise OptionError(
            f"maps of shape {maps.shape} do not match {len(layers)} layers and {len(heads)} heads"
        )
    if layers != list(range(1, len(layers) + 1)):
        raise OptionError(
            f"rollout needs consecutive layers from 1: got {_listed(layers)} "
            f"(select layers 1..{max(layers, default=1)})"
        )
    if sorted(heads) != list(range(num_heads)):
        raise OptionError(
            f"rollout needs every head: got {_listed(heads)} of {num_heads} (select all heads)"
        )
    n_tokens = maps.shape[-1]
    identity = np.eye(n_tokens)
    result = np.empty((len(layers), n_tokens, n_tokens), dtype=np.float32)  # (K, T, T)
    product = identity
    for k in range(len(layers)):
        mixed = (maps[k].mean(axis=0, dtype=np.float64) + identity) / 2  # (T, T)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        product = mixed @ product
        result[k] = product
    return result


def _listed(values: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in values[:12])
    return shown + (f", … ({len(values)} in all)" if len(values) > 12 else "")


# ---------------------------------------------------------------- norm-weighted attention


def norm_weighted(maps: np.ndarray, value_norms: np.ndarray) -> np.ndarray:
    """Norm-based attention (Kobayashi et al., 2020): ‖α_ij f_h(x_j)‖ = α_ij ‖f_h(x_j)‖, given
    `value_norms: (K, A, T)`, the norm of each key token's transformed value vector per head.

    Returns `(K, A, T, T)`; rows no longer sum to 1 (divide by `x.sum(-1, keepdims=True)` to
    show them as shares)."""
    maps = _check_maps(maps)
    norms = np.asarray(value_norms)
    if norms.shape != maps.shape[:3]:
        raise OptionError(
            f"value_norms must have the shape (layers, heads, T) = {maps.shape[:3]}: "
            f"got {norms.shape}"
        )
    if (norms < 0).any():
        raise OptionError("value_norms must be norms (>= 0): got a negative value")
    return (maps * norms[:, :, None, :]).astype(np.float32)  # (K, A, T, T)


# ---------------------------------------------------------------- per-head statistics


def punctuation_mask(items: Sequence[str]) -> np.ndarray:
    """`(T,)` True for tokens made only of Unicode punctuation, once a leading `##`, `Ġ` or `▁`
    is removed (as `to_punct` counts them)."""
    flags = np.zeros(len(items), dtype=bool)
    for i, item in enumerate(items):
        text = item[2:] if item.startswith("##") else item.lstrip("Ġ▁")
        flags[i] = bool(text) and all(unicodedata.category(c).startswith("P") for c in text)
    return flags


def row_measures(
    maps: np.ndarray, special: np.ndarray, punctuation: np.ndarray
) -> dict[str, np.ndarray]:
    """Each measure of `MEASURES` for each query row of one text: `{name: (K, A, T)}`, NaN
    where a row has no value (no previous token for row 0, no next one for row T-1)."""
    maps = _check_maps(maps)
    n_layers, n_heads, n_tokens, _ = maps.shape
    special = _check_vector(special, n_tokens, "special", bool)
    punctuation = _check_vector(punctuation, n_tokens, "punctuation", bool)
    position = np.arange(n_tokens)
    separators = special & (position != 0)
    punct = punctuation & ~special
    distance = np.abs(position[:, None] - position[None, :]).astype(np.float32)  # (T, T)
    out = {name: np.full((n_layers, n_heads, n_tokens), np.nan) for name in MEASURES}
    for k in range(n_layers):  # a layer at a time: temporaries stay (A, T, T)
        a = maps[k].astype(np.float32, copy=False)  # (A, T, T)
        logs = np.log(np.where(a > 0, a, 1))
        out["entropy"][k] = -(a * logs).sum(axis=-1, dtype=np.float64)
        if n_tokens:
            out["to_cls"][k] = a[:, :, 0]
        out["to_sep"][k] = a[:, :, separators].sum(axis=-1, dtype=np.float64)
        out["to_punct"][k] = a[:, :, punct].sum(axis=-1, dtype=np.float64)
        out["to_prev"][k][:, 1:] = np.diagonal(a, offset=-1, axis1=1, axis2=2)
        out["to_next"][k][:, :-1] = np.diagonal(a, offset=1, axis1=1, axis2=2)
        out["to_self"][k] = np.diagonal(a, axis1=1, axis2=2)
        out["distance"][k] = (a * distance).sum(axis=-1, dtype=np.float64)
    return out


class HeadStats:
    """Per-head statistics (`MEASURES`) over a corpus of any size, one text at a time.

    Each measure is the mean over every counted query row of every text, pooled (a row weighs
    the same wherever it is, so longer texts weigh more). By default the rows of special
    tokens count too, as in Clark et al. (2019), who average over all tokens;
    `special_rows=False` keeps only the rows of the text's own tokens. Memory is fixed: a sum
    per (measure, layer, head) and a count of rows per measure (the same for every head).
    """

    def __init__(self, layers: Sequence[int], heads: Sequence[int], special_rows: bool = True):
        self.layers = [int(v) for v in layers]
        self.heads = [int(v) for v in heads]
        self.special_rows = bool(special_rows)
        self.texts = 0
        self._sums = np.zeros((len(MEASURES), len(self.layers), len(self.heads)))  # (M, K, A)
        self._counts = np.zeros(len(MEASURES), dtype=np.int64)  # (M,)

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator's arrays: fixed, whatever the number of texts."""
        return self._sums.nbytes + self._counts.nbytes

    def add(
        self,
        maps: np.ndarray,
        special: np.ndarray,
        items: Sequence[str] | None = None,
        punctuation: np.ndarray | None = None,
    ) -> None:
        """Count one text: its `maps: (K, A, T, T)` (rows summing to 1), `special: (T,)` and
        either its token strings `items` or its own `punctuation: (T,)` flags."""
        maps = _check_maps(maps)
        if maps.shape[:2] != (len(self.layers), len(self.heads)):
            raise OptionError(
                f"maps of shape {maps.shape} do not match the {len(self.layers)} layers and "
                f"{len(self.heads)} heads counted"
            )
        if punctuation is None:
            if items is None:
                raise OptionError("HeadStats.add needs the token strings or punctuation flags")
            punctuation = punctuation_mask(_check_vector(items, maps.shape[-1], "items", object))
        sums = maps.sum(axis=-1, dtype=np.float64)
        if sums.size and np.abs(sums - 1).max() > _ROW_SUM_TOLERANCE:
            worst = float(sums.flat[np.abs(sums - 1).argmax()])
            raise OptionError(
                f"attention rows must sum to 1: one sums to {worst:.4g} (pass attention "
                "weights, not norm-weighted maps)"
            )
        values = row_measures(maps, special, punctuation)
        rows = np.ones(maps.shape[-1], dtype=bool)
        if not self.special_rows:
            rows = ~np.asarray(special, dtype=bool)
        for m, name in enumerate(MEASURES):
            counted = values[name][:, :, rows]  # (K, A, rows)
            self._sums[m] += np.nansum(counted, axis=-1)
            if counted.size:
                self._counts[m] += int((~np.isnan(counted[0, 0])).sum())
        self.texts += 1

    def result(self) -> list[dict[str, int | float | None]]:
        """One row per (layer, head): `layer`, `head` and each measure (None where no row was
        counted)."""
        means = np.full(self._sums.shape, np.nan)
        counted = self._counts > 0
        means[counted] = self._sums[counted] / self._counts[counted][:, None, None]
        table = []
        for k, layer in enumerate(self.layers):
            for a, head in enumerate(self.heads):
                row: dict[str, int | float | None] = {"layer": layer, "head": head}
                for m, name in enumerate(MEASURES):
                    value = float(means[m, k, a])
                    row[name] = None if math.isnan(value) else value
                table.append(row)
        return table

    def settings(self) -> dict[str, object]:
        """What the table was computed over, for a results file: texts, rows, the row rule."""
        return {
            "texts": self.texts,
            "query_rows": int(self._counts[0]),
            "special_rows": self.special_rows,
            "pooled": "mean over every counted query row of every text",
        }


def stats_csv(table: Sequence[dict]) -> str:
    """The table as CSV text: `layer,head,` then the measures; an empty cell for None."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["layer", "head", *MEASURES])
    for row in table:
        cells = [row["layer"], row["head"]]
        cells += ["" if row[m] is None else f"{row[m]:.6g}" for m in MEASURES]
        writer.writerow(cells)
    return buffer.getvalue()


def write_stats_csv(table: Sequence[dict], path: str | Path) -> Path:
    """Write the table as CSV, atomically (NAME.tmp, then renamed)."""
    return write_text_atomically(path, stats_csv(table))


def write_stats_json(table: Sequence[dict], path: str | Path, metadata: dict | None = None) -> Path:
    """Write the table as JSON with each measure's definition and `metadata` (e.g.
    `HeadStats.settings()`, a provenance), atomically."""
    from .. import __version__

    data = {
        "bertlayers_version": __version__,
        **(metadata or {}),
        "measures": MEASURES,
        "rows": list(table),
    }
    return write_text_atomically(path, json.dumps(data, indent=1, default=str) + "\n")
