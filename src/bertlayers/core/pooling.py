"""Pooling as small pure functions: sentence pooling over a token mask, subwords to words, and
the combination of selected layers per token.

Sentence poolers take `hidden` of shape `(K, B, T, H)` (layers, batch, tokens, hidden) and a
boolean `mask` `(B, T)` that is True for the tokens to pool over; padding is never in it.
Each returns `(K, B, H)`. Nothing is written into the caller's tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from ..options import Combine, Pooling


def pooling_mask(
    attention_mask: torch.Tensor, special_mask: torch.Tensor, include_special: bool
) -> torch.Tensor:
    """Tokens to pool over `(B, T)`: real tokens, without special ones unless asked.

    A text with no token left (an empty text is only [CLS] [SEP]) falls back to its special
    tokens, so it still gets a defined vector instead of a division by zero.
    """
    real = attention_mask.bool()
    if include_special:
        return real
    content = real & ~special_mask.bool()
    empty = ~content.any(dim=1, keepdim=True)  # (B, 1)
    return torch.where(empty, real, content)


def cls_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first token of the sequence ([CLS] / <s>), whatever the mask says."""
    return hidden[..., 0, :]


def mean_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked tokens: one batched matmul with the normalised mask, no
    `(K, B, T, H)` temporary."""
    weights = mask.to(hidden.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1)  # (B, T)
    return torch.matmul(weights.unsqueeze(-2), hidden).squeeze(-2)  # (K, B, H)


def max_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max over the masked tokens."""
    fill = torch.finfo(hidden.dtype).min
    return hidden.masked_fill(~mask.unsqueeze(-1), fill).amax(dim=-2)


def _take(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Pick one token per text: `positions` `(B,)` -> `(K, B, H)`."""
    batch = torch.arange(hidden.shape[-3], device=hidden.device)
    return hidden[..., batch, positions, :]


def first_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first masked token (the first word piece of the text)."""
    return _take(hidden, mask.int().argmax(dim=1))


def last_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last masked token (the last word piece of the text)."""
    length = mask.shape[1]
    return _take(hidden, length - 1 - mask.int().flip(1).argmax(dim=1))


POOLERS = {
    Pooling.CLS: cls_pooling,
    Pooling.MEAN: mean_pooling,
    Pooling.MAX: max_pooling,
    Pooling.FIRST: first_pooling,
    Pooling.LAST: last_pooling,
}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """Pool `(K, B, T, H)` to `(K, B, H)` with the named mode."""
    return POOLERS[mode](hidden, mask)


def pool_stitched(rows: np.ndarray, cls: np.ndarray, mode: Pooling) -> np.ndarray:
    """Sentence pooling of one record stitched from its windows, `(T, K, H)` -> `(K, H)`, by
    the same poolers as a batch; `cls` is the windows' `[CLS]` vectors `(windows, K, H)`, whose
    mean is the record's `cls`."""
    if mode is Pooling.CLS:
        return cls.mean(axis=0)
    hidden = torch.from_numpy(np.ascontiguousarray(rows)).transpose(0, 1).unsqueeze(1)
    mask = torch.ones((1, rows.shape[0]), dtype=torch.bool)  # every stitched row counts
    return pool(hidden, mask, mode)[:, 0].numpy()  # (K, 1, T, H) -> (K, H)


def word_pooling(tokens: np.ndarray, word_ids: np.ndarray, n_words: int, mode: str) -> np.ndarray:
    """Pool subword vectors `(T, ...)` to words `(n_words, ...)`; `word_ids` `(T,)` ascending.

    Each word's tokens are contiguous (fast tokenizers guarantee it), so `reduceat` pools every
    word in one vectorised call. Every word in `0..n_words-1` must own at least one token.
    """
    if n_words == 0:
        return tokens[:0]
    starts = np.flatnonzero(np.r_[True, word_ids[1:] != word_ids[:-1]])  # first token per word
    if len(starts) != n_words or (n_words and (word_ids[starts] != np.arange(n_words)).any()):
        raise ValueError("word ids do not cover every word exactly once")
    if mode == "first":
        return tokens[starts]
    if mode == "last":
        return tokens[np.r_[starts[1:], len(tokens)] - 1]
    if mode == "mean":
        counts = np.diff(np.r_[starts, len(tokens)]).astype(np.float32)
        sums = np.add.reduceat(tokens.astype(np.float32), starts, axis=0)
        return sums / counts.reshape((-1,) + (1,) * (tokens.ndim - 1))
    if mode == "max":
        return np.maximum.reduceat(tokens, starts, axis=0)
    raise ValueError(mode)


def combine_layers(hidden: torch.Tensor, mode: Combine) -> torch.Tensor:
    """Combine stacked layers per token: `(K, ..., H)` -> `(K, ..., H)` or `(1, ..., H or K*H)`."""
    if mode is Combine.STACK:
        return hidden
    if mode is Combine.MEAN:
        return hidden.mean(dim=0, keepdim=True)
    if mode is Combine.SUM:
        return hidden.sum(dim=0, keepdim=True)
    # concat: layers side by side along the hidden axis, in the order they were asked for
    return torch.cat(list(hidden.unbind(0)), dim=-1).unsqueeze(0)
