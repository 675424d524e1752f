"""What the routes hand on: embedded records, in input order, as arrays (numpy only).

A chunk holds consecutive records: one row each at sentence level, `lengths[i]` rows each at
token and word level. Sinks write chunks; `records()` gives one `RecordVectors` per record
(views of the chunk's arrays, nothing copied) for callers that want them one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class RecordVectors:
    """One embedded record.

    `vectors` is `(K, H)` at sentence level (`(1, H)` or `(1, K*H)` when layers are
    combined), `(T, K, H)` at token and word level with the token or word strings in `items`
    and their `(start, end)` character spans in `spans`."""

    id: str
    vectors: np.ndarray
    n_tokens: int  # tokens of the whole text, special tokens included, before truncation
    truncated: bool
    windows: int  # windows the text ran in (1 unless split)
    items: list[str] | None = None
    spans: np.ndarray | None = None  # (T, 2)


@dataclass
class SentenceChunk:
    """Pooled vectors of consecutive records: one row per record."""

    ids: list[str]
    vectors: np.ndarray  # (n, K, H) — or (n, 1, K*H) for concat
    n_tokens: np.ndarray  # (n,) tokens of the whole text, special tokens included
    truncated: np.ndarray  # (n,) bool
    windows: np.ndarray  # (n,) windows each text ran in (1 unless split)
    chunk_end: bool = True  # the last piece of an input chunk: a durable point for stores

    def records(self) -> list[RecordVectors]:
        """One `RecordVectors` per record (rows are views of `vectors`)."""
        vectors = np.asarray(self.vectors)
        return [
            RecordVectors(record_id, vectors[i], *self._counts(i))
            for i, record_id in enumerate(self.ids)
        ]

    def _counts(self, i: int) -> tuple[int, bool, int]:
        return int(self.n_tokens[i]), bool(self.truncated[i]), int(self.windows[i])


@dataclass
class RaggedChunk(SentenceChunk):
    """Token or word vectors of consecutive records: `lengths[i]` rows per record.

    `vectors` is flat `(sum T_i, K, H)`; `items` are the token or word strings and `spans`
    their `(start, end)` character offsets in the record's text, one per row.
    """

    lengths: np.ndarray = None  # type: ignore[assignment]  # (n,)
    items: list[str] = None  # type: ignore[assignment]  # (sum T_i,)
    spans: np.ndarray = None  # type: ignore[assignment]  # (sum T_i, 2)
    replaced: list[tuple[str, int]] = None  # type: ignore[assignment]  # (record id, word)

    @property
    def offsets(self) -> np.ndarray:
        """`(n+1,)`: record i is rows `offsets[i]:offsets[i+1]`."""
        return np.r_[0, np.cumsum(self.lengths)].astype(np.int64)

    def records(self) -> list[RecordVectors]:
        vectors = np.asarray(self.vectors)
        bounds = self.offsets.tolist()
        out = []
        for i, record_id in enumerate(self.ids):
            lo, hi = bounds[i], bounds[i + 1]
            out.append(
                RecordVectors(
                    record_id,
                    vectors[lo:hi],
                    *self._counts(i),
                    items=self.items[lo:hi],
                    spans=self.spans[lo:hi],
                )
            )
        return out


def concat_chunks(chunks: Sequence[SentenceChunk]) -> SentenceChunk:
    """One chunk holding the records of several, in order (all of one kind)."""
    if len(chunks) == 1:
        return chunks[0]
    common = dict(
        ids=[i for c in chunks for i in c.ids],
        vectors=np.concatenate([np.asarray(c.vectors) for c in chunks]),
        n_tokens=np.concatenate([c.n_tokens for c in chunks]),
        truncated=np.concatenate([c.truncated for c in chunks]),
        windows=np.concatenate([c.windows for c in chunks]),
    )
    if not isinstance(chunks[0], RaggedChunk):
        return SentenceChunk(**common)
    ragged = [c for c in chunks if isinstance(c, RaggedChunk)]
    return RaggedChunk(
        **common,
        lengths=np.concatenate([c.lengths for c in ragged]),
        items=[x for c in ragged for x in c.items],
        spans=np.concatenate([c.spans for c in ragged]),
        replaced=[x for c in ragged for x in c.replaced],
    )


def take_records(chunk: SentenceChunk, start: int, stop: int) -> SentenceChunk:
    """Records `start:stop` of a chunk (their rows, ids and columns)."""
    common = dict(
        ids=chunk.ids[start:stop],
        n_tokens=chunk.n_tokens[start:stop],
        truncated=chunk.truncated[start:stop],
        windows=chunk.windows[start:stop],
    )
    if not isinstance(chunk, RaggedChunk):
        return SentenceChunk(vectors=np.asarray(chunk.vectors)[start:stop], **common)
    offsets = chunk.offsets
    lo, hi = int(offsets[start]), int(offsets[stop])
    ids = set(common["ids"])
    return RaggedChunk(
        vectors=np.asarray(chunk.vectors)[lo:hi],
        lengths=chunk.lengths[start:stop],
        items=chunk.items[lo:hi],
        spans=chunk.spans[lo:hi],
        replaced=[r for r in chunk.replaced if r[0] in ids],
        **common,
    )
