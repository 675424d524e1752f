"""Result types, and `load` to read any output back.

Sentence level: one `(N, K, H)` array. Token and word level are ragged: one flat
`(sum T_i, K, H)` array plus offsets `(N+1,)`, so text `i` is rows `offsets[i]:offsets[i+1]`,
with the token or word strings and their `(start, end)` character spans beside it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, OptionError
from .layers import resolve_layers
from .options import Combine


def _layer_position(layers: list[int], provenance: dict, index: int) -> int:
    if provenance.get("combine", Combine.STACK.value) != Combine.STACK.value:
        raise OptionError("layers were combined: there is no single layer to take")
    wanted = resolve_layers(index, provenance["model"]["num_layers"]).indices[0]
    if wanted not in layers:
        raise OptionError(f"layer {index} was not extracted; layers here: {layers}")
    return layers.index(wanted)


@dataclass
class SentenceEmbeddings:
    """Pooled embeddings of N texts, in input order.

    `embeddings` is `(N, K, H)`: texts x selected layers x hidden size, or `(N, 1, H)` when the
    layers are combined by mean/sum and `(N, 1, K*H)` when concatenated.
    """

    embeddings: np.ndarray
    ids: list[str]
    layers: list[int]
    n_tokens: np.ndarray  # (N,) tokens of the whole text, special tokens included
    truncated: np.ndarray  # (N,) bool
    provenance: dict = field(repr=False)

    level = "sentence"

    def layer(self, index: int) -> np.ndarray:
        """The `(N, H)` vectors of one layer (our index convention; it must have been selected)."""
        return self.embeddings[:, _layer_position(self.layers, self.provenance, index)]


@dataclass
class TextVectors:
    """One text's token or word vectors `(T, K, H)` with their strings and character spans."""

    id: str
    vectors: np.ndarray
    items: list[str]
    spans: np.ndarray  # (T, 2)


@dataclass
class RaggedEmbeddings:
    """Token- or word-level embeddings of N texts: flat rows plus offsets, in input order.

    `result[i]` is text i as `TextVectors`; `vectors[offsets[i]:offsets[i+1]]` its rows.
    """

    vectors: np.ndarray  # (sum T_i, K, H)
    offsets: np.ndarray  # (N+1,)
    ids: list[str]
    items: list[str]  # token or word strings, one per row
    spans: np.ndarray  # (sum T_i, 2) character offsets in each text
    layers: list[int]
    n_tokens: np.ndarray  # (N,)
    truncated: np.ndarray  # (N,) bool
    provenance: dict = field(repr=False)

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
        return [self.vectors[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]

    def layer(self, index: int) -> np.ndarray:
        """The flat `(sum T_i, H)` rows of one layer."""
        return self.vectors[:, _layer_position(self.layers, self.provenance, index)]


def _from_parts(vectors: np.ndarray, arrays: dict, provenance: dict):
    texts = provenance.get("texts", {})
    ids = [str(x) for x in arrays["ids"]] if "ids" in arrays else texts.get("ids", [])
    common = dict(
        ids=ids,
        layers=list(provenance["layers"]),
        n_tokens=np.asarray(texts.get("n_tokens", []), dtype=np.int64),
        truncated=np.asarray(texts.get("truncated", []), dtype=bool),
        provenance=provenance,
    )
    if provenance.get("level", "sentence") == "sentence":
        return SentenceEmbeddings(embeddings=vectors, **common)
    return RaggedEmbeddings(
        vectors=vectors,
        offsets=np.asarray(arrays["offsets"]),
        items=[str(x) for x in arrays["items"]],
        spans=np.asarray(arrays["spans"]),
        **common,
    )


def load(path: str | Path) -> SentenceEmbeddings | RaggedEmbeddings:
    """Read an output of `bertlayers extract` (`.npy` + sidecars, or `.npz`).

    Vectors of an `.npy` output are memory-mapped, so a large store is read lazily. Sentence
    level gives `SentenceEmbeddings`, token and word level `RaggedEmbeddings`.
    """
    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = f" (an incomplete run left {partial.name})" if partial.exists() else ""
        raise InputError(f"no such output: {path}{hint}")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            provenance = json.loads(str(arrays.pop("provenance")))
            return _from_parts(arrays.pop("vectors"), arrays, provenance)
        sidecar = path.with_suffix(".json")
        if not sidecar.exists():
            raise InputError(f"{path}: its provenance {sidecar.name} is missing")
        provenance = json.loads(sidecar.read_text(encoding="utf-8"))
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        arrays = {}
        if provenance.get("level", "sentence") != "sentence":
            with np.load(path.with_suffix(".index.npz"), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not a readable bertlayers output: {err}") from None
    return _from_parts(vectors, arrays, provenance)
