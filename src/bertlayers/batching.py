"""Tokenization and the order of work: sort by length, pack batches under a token budget.

Texts are tokenized without padding; those longer than the model's limit are tokenized again
with truncation and flagged. Batches hold texts of similar length (sorted), stay under a token
budget (padded tokens) and a padding cap, and remember each text's position in its chunk so
results go back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .readers import Record


@dataclass
class Encoded:
    """The token ids of a chunk of records (ragged, unpadded) with their bookkeeping."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    special_mask: list[list[int]]
    full_lengths: np.ndarray  # (N,) tokens before truncation, special tokens included
    truncated: np.ndarray  # (N,) bool

    @property
    def lengths(self) -> np.ndarray:
        """Tokens each text runs with (after truncation): `(N,)`."""
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64)


def tokenize(
    tokenizer, records: Sequence[Record], max_length: int, use_token_types: bool
) -> Encoded:
    """Tokenize a chunk with the fast tokenizer; truncate (and flag) texts over `max_length`."""
    texts = [r.text for r in records]
    has_pairs = any(r.pair is not None for r in records)
    pairs = [r.pair if r.pair is not None else "" for r in records] if has_pairs else None
    kwargs = {
        "add_special_tokens": True,
        "return_special_tokens_mask": True,
        "return_token_type_ids": use_token_types,
        "return_attention_mask": False,
        "verbose": False,
    }
    enc = tokenizer(texts, pairs, truncation=False, **kwargs)
    input_ids = enc["input_ids"]
    special = enc["special_tokens_mask"]
    types = enc["token_type_ids"] if use_token_types else None
    full = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(texts))
    long_rows = np.flatnonzero(full > max_length)
    if len(long_rows):
        long_texts = [texts[i] for i in long_rows]
        long_pairs = [pairs[i] for i in long_rows] if pairs is not None else None
        cut = tokenizer(
            long_texts,
            long_pairs,
            truncation="longest_first",
            max_length=max_length,
            **kwargs,
        )
        for j, i in enumerate(long_rows):
            input_ids[i] = cut["input_ids"][j]
            special[i] = cut["special_tokens_mask"][j]
            if types is not None:
                types[i] = cut["token_type_ids"][j]
    truncated = full > max_length
    return Encoded(input_ids, types, special, full, truncated)


def plan_batches(
    lengths: np.ndarray, batch_tokens: int, max_batch_size: int, max_padding: float = 0.25
) -> list[np.ndarray]:
    """Group positions into batches: longest first, padded size under `batch_tokens`.

    A batch also closes when adding a text would make more than `max_padding` of its padded
    tokens padding, so one long text never pads a batch of short ones.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        real = 0
        end = start
        while end < n:
            size = end - start + 1
            if size > max_batch_size or size * longest > max(batch_tokens, longest):
                break
            new_real = real + int(lengths[order[end]])
            if size > 1 and 1 - new_real / (size * longest) > max_padding:
                break
            real = new_real
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def collate(encoded: Encoded, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the rows of one batch into tensors: ids, attention mask, special mask, types."""
    size = len(rows)
    width = max(len(encoded.input_ids[i]) for i in rows)
    ids = torch.full((size, width), pad_id, dtype=torch.long)
    attention = torch.zeros((size, width), dtype=torch.long)
    special = torch.zeros((size, width), dtype=torch.bool)
    types = torch.zeros((size, width), dtype=torch.long) if encoded.token_type_ids else None
    for b, i in enumerate(rows):
        n = len(encoded.input_ids[i])
        ids[b, :n] = torch.tensor(encoded.input_ids[i])
        attention[b, :n] = 1
        special[b, :n] = torch.tensor(encoded.special_mask[i], dtype=torch.bool)
        if types is not None:
            types[b, :n] = torch.tensor(encoded.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": attention, "special_tokens_mask": special}
    if types is not None:
        batch["token_type_ids"] = types
    return batch
