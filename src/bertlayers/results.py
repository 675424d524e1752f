"""Result types: what the core returns and `bertlayers.load` reads back (numpy only).

Sentence level: one `(N, K, H)` array. Token and word level are ragged: one flat
`(sum T_i, K, H)` array plus offsets `(N+1,)`, so text `i` is rows `offsets[i]:offsets[i+1]`,
with the token or word strings and their `(start, end)` character spans beside it.
Vectors of a loaded store are read lazily: `layer(i)` reads one layer (only that layer, in
HDF5, Parquet and safetensors stores), `embeddings`/`vectors` read everything on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import OptionError
from .layers import resolve_layers
from .options import Combine


class LayerSource(Protocol):
    """Lazy access to stored vectors `(rows, K, H)`."""

    shape: tuple[int, int, int]
    dtype: np.dtype

    def layer(self, position: int) -> np.ndarray: ...

    def block(self, start: int, stop: int) -> np.ndarray: ...

    def all(self) -> np.ndarray: ...


class ArraySource:
    """A LayerSource over an array in memory (or memory-mapped)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype

    def layer(self, position: int) -> np.ndarray:
        return np.asarray(self.array[:, position])

    def block(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])

    def all(self) -> np.ndarray:
        return self.array


def _layer_position(layers: list[int], provenance: dict, index: int) -> int:
    if provenance.get("combine", Combine.STACK.value) != Combine.STACK.value:
        raise OptionError("layers were combined: there is no single layer to take")
    wanted = resolve_layers(index, provenance["model"]["num_layers"]).indices[0]
    if wanted not in layers:
        raise OptionError(f"layer {index} was not extracted; layers here: {layers}")
    return layers.index(wanted)


def _source(vectors: np.ndarray | LayerSource) -> LayerSource:
    return ArraySource(vectors) if isinstance(vectors, np.ndarray) else vectors


@dataclass(eq=False)
class SentenceEmbeddings:
    """Pooled embeddings of N texts, in input order.

    `embeddings` is `(N, K, H)`: texts x selected layers x hidden size, or `(N, 1, H)` when the
    layers are combined by mean/sum and `(N, 1, K*H)` when concatenated.
    """

    source: LayerSource = field(repr=False)
    ids: list[str]
    layers: list[int]
    n_tokens: np.ndarray  # (N,) tokens of the whole text, special tokens included
    truncated: np.ndarray  # (N,) bool
    provenance: dict = field(repr=False)
    windows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # (N,)

    level = "sentence"

    @functools.cached_property
    def embeddings(self) -> np.ndarray:
        return self.source.all()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape)

    def layer(self, index: int) -> np.ndarray:
        """The `(N, H)` vectors of one layer (our index convention; it must have been selected)."""
        return self.source.layer(_layer_position(self.layers, self.provenance, index))


@dataclass
class TextVectors:
    """One text's token or word vectors `(T, K, H)` with their strings and character spans."""

    id: str
    vectors: np.ndarray
    items: list[str]
    spans: np.ndarray  # (T, 2)


@dataclass(eq=False)
class RaggedEmbeddings:
    """Token- or word-level embeddings of N texts: flat rows plus offsets, in input order.

    `result[i]` is text i as `TextVectors`; `vectors[offsets[i]:offsets[i+1]]` its rows.
    """

    source: LayerSource = field(repr=False)
    offsets: np.ndarray  # (N+1,)
    ids: list[str]
    items: list[str]  # token or word strings, one per row
    spans: np.ndarray  # (sum T_i, 2) character offsets in each text
    layers: list[int]
    n_tokens: np.ndarray  # (N,)
    truncated: np.ndarray  # (N,) bool
    provenance: dict = field(repr=False)
    windows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # (N,)

    @functools.cached_property
    def vectors(self) -> np.ndarray:
        """All rows `(sum T_i, K, H)`."""
        return self.source.all()

    @property
    def level(self) -> str:
        return self.provenance.get("level", "token")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> TextVectors:
        if not -len(self) <= i < len(self):
            raise IndexError(f"text {i} out of range for {len(self)} texts")
        i %= len(self)
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return TextVectors(
            self.ids[i], self.vectors[start:end], self.items[start:end], self.spans[start:end]
        )

    def __iter__(self) -> Iterator[TextVectors]:
        return (self[i] for i in range(len(self)))

    def arrays(self) -> list[np.ndarray]:
        """Per-text arrays `(T_i, K, H)`."""
        vectors = self.vectors
        return [vectors[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]

    def layer(self, index: int) -> np.ndarray:
        """The flat `(sum T_i, H)` rows of one layer."""
        return self.source.layer(_layer_position(self.layers, self.provenance, index))


def make_result(
    vectors: np.ndarray | LayerSource, index: dict, provenance: dict
) -> SentenceEmbeddings | RaggedEmbeddings:
    """A result from vectors (or a lazy source), index arrays and provenance."""
    texts = provenance.get("texts", {})  # where older stores kept the per-text columns

    def column(name: str, dtype: type) -> np.ndarray:
        return np.asarray(index.get(name, texts.get(name, [])), dtype=dtype)

    common = dict(
        source=_source(vectors),
        ids=[str(x) for x in index.get("ids", texts.get("ids", []))],
        layers=list(provenance["layers"]),
        n_tokens=column("n_tokens", np.int64),
        truncated=column("truncated", bool),
        windows=column("windows", np.int64),
        provenance=provenance,
    )
    if provenance.get("level", "sentence") == "sentence":
        return SentenceEmbeddings(**common)
    return RaggedEmbeddings(
        offsets=np.asarray(index["offsets"]),
        items=[str(x) for x in index["items"]],
        spans=np.asarray(index["spans"]),
        **common,
    )
