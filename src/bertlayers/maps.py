"""Attention maps of a text (`AttentionMaps`), and word pieces merged into words — numpy only,
shared by the attention route (`core/attention.py`) and the analysis of maps.

A text's maps are `maps: (K, A, T, T)`: K selected layers, A selected heads, T tokens with
the special ones; `maps[k, a, i, j]` is the attention of query token i to key token j (rows
sum to 1). The attention of layer k (1..L) is the self-attention inside encoder layer k, the
one that produces hidden state k; layer 0 (the embeddings) has none.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import OptionError

if TYPE_CHECKING:
    from .chunks import RaggedChunk


@dataclass
class AttentionMaps:
    """One text's attention per selected layer and head, with what each row and column is.

    `items` are the T units (tokens, or words at word level) with the special tokens; `spans`
    their `(start, end)` character offsets in the text (in the pair's text where `segments`
    is 1; `(0, 0)` for special tokens). `kind` says what the maps hold: `attention` (the
    softmax weights), `norms` (‖α_ij f_h(x_j)‖, Kobayashi et al. 2020: rows do not sum to 1)
    or `rollout` (Abnar & Zuidema 2020: one "head" per layer)."""

    id: str
    maps: np.ndarray  # (K, A, T, T) float32
    items: list[str]  # (T,)
    spans: np.ndarray  # (T, 2)
    layers: list[int]
    heads: list[int]
    special: np.ndarray  # (T,) bool
    segments: np.ndarray  # (T,) int64: 0 the text, 1 the pair
    n_tokens: int  # tokens of the whole text (pair included), before truncation
    truncated: bool
    level: str = "token"
    kind: str = "attention"
    word_ids: np.ndarray | None = field(default=None, repr=False)  # (T,) token level only

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.maps.shape)


def merge_words(maps: np.ndarray, word_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Word-level maps as Clark et al. (2019): attention TO a word sums its pieces' columns,
    attention FROM a word is the mean of its pieces' rows, so rows still sum to 1.

    `word_ids: (T,)` gives each token's word (-1 for special tokens, each of which stays its own
    unit); the pieces of a word must be adjacent. Returns `word_maps: (K, A, U, U)` and
    `starts: (U,)`, the first token position of each unit: unit u is the tokens
    `starts[u]:starts[u + 1]`, so `special[starts]` and `segments[starts]` are the units' flags
    and `merge_items(items, starts)` their strings.
    """
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
        raise OptionError(f"maps must have the shape (layers, heads, T, T): got {maps.shape}")
    word_ids = np.asarray(word_ids, dtype=np.int64)
    if word_ids.shape != (maps.shape[-1],):
        raise OptionError(
            f"word_ids must have one value per token ({maps.shape[-1]}): got {word_ids.shape}"
        )
    n_tokens = len(word_ids)
    if n_tokens == 0:
        return maps.copy(), np.zeros(0, dtype=np.int64)
    position = np.arange(n_tokens)
    new_unit = np.ones(n_tokens, dtype=bool)
    new_unit[1:] = (word_ids[1:] != word_ids[:-1]) | (word_ids[1:] < 0)
    starts = position[new_unit]
    words = word_ids[starts]
    seen = words[words >= 0]
    if len(np.unique(seen)) != len(seen):
        repeated = int(next(w for w in seen if (seen == w).sum() > 1))
        where = position[word_ids == repeated].tolist()
        raise OptionError(
            f"the pieces of word {repeated} are not adjacent (positions {where}): number the "
            "words of a pair's second text after the first's"
        )
    sizes = np.diff(np.append(starts, n_tokens))  # (U,)
    to_units = np.add.reduceat(maps, starts, axis=-1, dtype=np.float64)  # (K, A, T, U)
    merged = np.add.reduceat(to_units, starts, axis=-2) / sizes[:, None]  # (K, A, U, U)
    return merged.astype(np.float32), starts


def merge_items(items: Sequence[str], starts: np.ndarray) -> list[str]:
    """The string of each unit from `merge_words`: its pieces joined, a WordPiece `##` dropped
    from the pieces after the first (BPE markers such as Ġ are left as they are)."""
    bounds = [*(int(s) for s in starts), len(items)]
    units = []
    for start, end in itertools.pairwise(bounds):
        pieces = list(items[start:end])
        rest = [p[2:] if p.startswith("##") else p for p in pieces[1:]]
        units.append("".join([pieces[0], *rest]))
    return units


# ---------------------------------------------------------------- maps in a store


def maps_chunk(texts: Sequence[AttentionMaps], dtype: str = "float32") -> RaggedChunk:
    """Texts' maps as a ragged chunk for the stores: text i is `T_i²` rows, one per
    (query, key) pair in row-major order (row `q·T + k`), each `(K, A)`; a row's item and span
    are its key token's. `maps_from_rows` reads a text back."""
    from .chunks import RaggedChunk

    rows, items, spans = [], [], []
    for text in texts:
        k, a, t, _ = text.maps.shape
        rows.append(text.maps.transpose(2, 3, 0, 1).reshape(t * t, k, a))  # (T*T, K, A)
        items.extend(list(text.items) * t)
        spans.append(np.tile(np.asarray(text.spans, dtype=np.int64).reshape(-1, 2), (t, 1)))
    width = (len(texts[0].layers), len(texts[0].heads)) if texts else (0, 0)
    return RaggedChunk(
        ids=[t.id for t in texts],
        vectors=np.concatenate(rows).astype(dtype) if rows else np.zeros((0, *width), dtype),
        n_tokens=np.asarray([t.n_tokens for t in texts], dtype=np.int64),
        truncated=np.asarray([t.truncated for t in texts], dtype=bool),
        windows=np.ones(len(texts), dtype=np.int64),
        lengths=np.asarray([len(t.items) ** 2 for t in texts], dtype=np.int64),
        items=items,
        spans=np.concatenate(spans) if spans else np.zeros((0, 2), np.int64),
        replaced=[],
    )


def maps_from_rows(
    record_id: str,
    rows: np.ndarray,
    items: Sequence[str],
    spans: np.ndarray,
    provenance: dict,
    n_tokens: int,
    truncated: bool,
) -> AttentionMaps:
    """One text's `AttentionMaps` from its `T²` store rows `(T*T, K, A)` (see `maps_chunk`)."""
    t = math.isqrt(len(rows))
    if t * t != len(rows):
        raise OptionError(f"text {record_id} has {len(rows)} rows: not a square of maps")
    maps = np.asarray(rows, dtype=np.float32).reshape(t, t, *rows.shape[1:]).transpose(2, 3, 0, 1)
    spans = np.asarray(spans[:t], dtype=np.int64)
    return AttentionMaps(
        id=record_id,
        maps=np.ascontiguousarray(maps),
        items=list(items[:t]),
        spans=spans,
        layers=list(provenance["layers"]),
        heads=list(provenance["heads"]),
        special=spans[:, 1] == 0,  # a special token spans nothing; a real one ends past 0
        segments=np.zeros(t, dtype=np.int64),  # not kept in a store
        n_tokens=int(n_tokens),
        truncated=bool(truncated),
        level=provenance.get("attention_level", "token"),
        kind=provenance.get("kind", "attention"),
    )
