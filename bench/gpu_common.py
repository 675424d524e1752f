"""The GPU check's shared clock, paths and device helpers (every gpu_* module uses them)."""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

START = time.monotonic()  # the budget counts from here, before torch is imported

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 512


def log(message: str) -> None:
    print(f"[gpu.py {time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def batch_tokens_for(device: torch.device) -> int:
    return 16384 if device.type == "cuda" else 1024  # bertlayers' defaults
