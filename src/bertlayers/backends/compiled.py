"""`torch.compile` (inductor) of the encoder: any batch shape, frozen weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def compile_cache_dir() -> Path:
    """Where the command line keeps compiled kernels between runs: `TORCHINDUCTOR_CACHE_DIR`
    if set, else `~/.cache/bertlayers/torchinductor` (`XDG_CACHE_HOME` honoured). The library
    leaves the choice to its caller (inductor's default is a temporary directory)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bertlayers" / "torchinductor"


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """`torch.compile` for any batch shape (`dynamic=True`) with frozen weights (inductor's
    `freezing`: constants folded, weights pre-packed for the CPU's matmul kernels).

    The first batches pay for compiling (about 30-40 s for a 6-layer model on 2 cores);
    inductor caches the kernels (in `TORCHINDUCTOR_CACHE_DIR`), so later runs start in
    seconds. Results equal the eager model's within float32 rounding (tested).
    """
    return torch.compile(model, dynamic=True, options={"freezing": True})
