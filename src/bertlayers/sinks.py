"""Sinks receive embedded chunks in input order and keep or write them with bounded memory.

The in-memory result is just another sink; the file stores (`stores.StoreSink`) are the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from .chunks import RaggedChunk, SentenceChunk


class RowTarget(Protocol):
    """Room for one chunk's token-level rows, filled in any order as batches finish."""

    def put(self, row: int, rows: np.ndarray) -> None:
        """Place `rows` `(n, K, H)` at row `row` of the chunk's output; `rows` may be reused
        once this returns (a GPU run's pinned buffer), so copy them."""

    @property
    def vectors(self) -> object:
        """What the chunk carries as its `vectors` once every row is in place."""


Reserve = Callable[[int, tuple[int, ...], np.dtype], RowTarget]


class ArrayRows:
    """A chunk's rows in an array in memory."""

    def __init__(self, n_rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.vectors = np.empty((n_rows, *row_shape), dtype=dtype)

    def put(self, row: int, rows: np.ndarray) -> None:
        self.vectors[row : row + len(rows)] = rows


class Sink(Protocol):
    """Where embedded chunks go: `write` in input order, then `close` (or `abort`).

    `reserve` makes room for the next chunk's token-level rows before it is written.
    """

    def reserve(self, n_rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> RowTarget: ...

    def write(self, chunk: SentenceChunk) -> None: ...

    def close(self, provenance: dict) -> None: ...

    def abort(self, provenance: dict) -> None: ...


class RaggedIndex:
    """Ids, per-text columns and, for ragged output, offsets, item strings and spans,
    gathered as chunks arrive (the index of an in-memory result)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.columns: dict[str, list[np.ndarray]] = {"n_tokens": [], "truncated": [], "windows": []}
        self.lengths: list[np.ndarray] = []
        self.items: list[str] = []
        self.spans: list[np.ndarray] = []

    def add(self, chunk: SentenceChunk) -> None:
        self.ids.extend(chunk.ids)
        self.columns["n_tokens"].append(np.asarray(chunk.n_tokens, dtype=np.int64))
        self.columns["truncated"].append(np.asarray(chunk.truncated, dtype=bool))
        self.columns["windows"].append(np.asarray(chunk.windows, dtype=np.int64))
        if isinstance(chunk, RaggedChunk):
            self.lengths.append(np.asarray(chunk.lengths, dtype=np.int64))
            self.items.extend(chunk.items)
            self.spans.append(np.asarray(chunk.spans, dtype=np.int64).reshape(-1, 2))

    def arrays(self) -> dict[str, np.ndarray]:
        """`ids`, `n_tokens`, `truncated`, `windows`, and for ragged output `offsets`
        `(N+1,)`, `items` and `spans` too."""
        out: dict = {"ids": self.ids}
        for name, parts in self.columns.items():
            dtype = bool if name == "truncated" else np.int64
            out[name] = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        if self.lengths:
            lengths = np.concatenate(self.lengths)
            out["offsets"] = np.r_[0, np.cumsum(lengths)].astype(np.int64)
            out["items"] = self.items
            out["spans"] = np.concatenate(self.spans)
        return out


class MemorySink:
    """Keeps every chunk in memory; `vectors()` joins them."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.index = RaggedIndex()
        self.provenance: dict = {}

    reserve = ArrayRows

    def write(self, chunk: SentenceChunk) -> None:
        self.chunks.append(chunk.vectors)
        self.index.add(chunk)

    def close(self, provenance: dict) -> None:
        self.provenance = provenance

    def abort(self, provenance: dict) -> None:
        self.provenance = provenance

    def vectors(self) -> np.ndarray:
        return np.concatenate(self.chunks)
