"""Sliding windows for texts longer than the model's limit, and which window owns each token.

A text of `n` content tokens (special tokens aside) is cut into windows of `width` tokens that
share `stride` tokens with the next one; the last window is aligned to the end of the text so it
is full. Each token takes its vectors from the window where it has the most context on both
sides (the larger of min(tokens before it, tokens after it) in the window; ties go to the
earlier window), as Hugging Face's question-answering pipeline does with its spans.
"""

from __future__ import annotations

import numpy as np

from ..errors import OptionError


def plan_windows(n: int, width: int, stride: int) -> list[tuple[int, int]]:
    """`[(start, end), ...]` content-token ranges covering `0..n` with `stride` overlap."""
    if width < 1:
        raise OptionError(f"window width must be at least 1 token, got {width}")
    if not 0 <= stride < width:
        raise OptionError(
            f"stride {stride} must be at least 0 and below the window's {width} tokens"
        )
    if n <= width:
        return [(0, n)]
    step = width - stride
    starts = [*range(0, n - width, step), n - width]
    return [(start, start + width) for start in starts]


def window_owners(n: int, windows: list[tuple[int, int]]) -> np.ndarray:
    """For each content token `(n,)`, the index of the window it takes its vectors from."""
    if len(windows) == 1:
        return np.zeros(n, dtype=np.int64)
    positions = np.arange(n)
    scores = np.full((len(windows), n), -1, dtype=np.int64)
    for w, (start, end) in enumerate(windows):
        inside = positions[start:end]
        scores[w, start:end] = np.minimum(inside - start, end - 1 - inside)
    return scores.argmax(axis=0)
