"""What the extraction loop hands to sinks: embedded records, in input order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SentenceChunk:
    """Pooled vectors of consecutive records: one row per record."""

    ids: list[str]
    vectors: np.ndarray  # (n, K, H) — or (n, 1, K*H) for concat
    n_tokens: np.ndarray  # (n,) tokens of the whole text, special tokens included
    truncated: np.ndarray  # (n,) bool
    windows: np.ndarray  # (n,) windows each text ran in (1 unless split)
    chunk_end: bool = True  # the last piece of an input chunk: a durable point for stores


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
