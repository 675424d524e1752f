"""The one fp32 matmul ceiling every bench divides by for MFU.

Measured the same way everywhere: the model's own matmul shapes (a batch of `tokens` rows times
H x 3H, H x I and I x H weights, as its projections and feed-forward run), each after a
warm-up, the median of several timed repeats; the ceiling is the best shape's median, in the
process that runs (or launches) the measured work, just before it. The record says how it was
measured and keeps every shape's figure.
"""

from __future__ import annotations

import statistics
import time

import torch

METHOD = (
    "fp32 torch.mm at the model's shapes (tokens x H @ H x 3H, H x I, I x H), 0.3 s warm-up, "
    "median of 5 repeats of 0.3 s each, best shape; threads as torch sets them"
)


def matmul_ceiling(hidden: int, intermediate: int, tokens: int = 1024) -> dict:
    """`{"gflops": best median, "shapes": {...}, "method": ...}` on this machine, now."""
    shapes = {
        "qkv": (tokens, hidden, 3 * hidden),
        "up": (tokens, hidden, intermediate),
        "down": (tokens, intermediate, hidden),
    }
    figures = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        _repeat(a, b, 0.3)
        rates = [_repeat(a, b, 0.3) * 2 * m * k * n / 1e9 for _ in range(5)]
        figures[name] = round(statistics.median(rates), 1)
    return {
        "gflops": max(figures.values()),
        "shapes": figures,
        "threads": torch.get_num_threads(),
        "method": METHOD,
    }


def _repeat(a: torch.Tensor, b: torch.Tensor, seconds: float) -> float:
    """Matmuls per second over `seconds`."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        torch.mm(a, b)
        count += 1
    return count / elapsed
