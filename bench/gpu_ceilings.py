"""The GPU check's ceilings: `linear` at model shapes (the MFU denominators), matmul, D2H."""

from __future__ import annotations

import statistics
import time

import torch
from gpu_common import sync

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA data sheets, TFLOP/s: recorded next
# to the measured ceilings, never used for MFU. The first name contained in
# `torch.cuda.get_device_name()` wins, so the more specific names come first.
BF16_PEAKS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM (HBM3)
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
    ("T4", 65.0),  # fp16: the T4 has no bf16
)


def _rate(fn, flops: float, device: torch.device, seconds: float) -> float:
    for _ in range(3):
        fn()
    sync(device)
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        if count % 8 == 0 or device.type != "cuda":
            sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return flops * count / elapsed


def linear_ceiling(config, dtype: torch.dtype, device, rows: int, seconds: float) -> dict:
    """FLOP/s of `linear` (bias included) at the model's shapes, `rows` tokens a batch, over
    one layer's mix (q, k, v, attention output: H->H; feed-forward: H->I, I->H): the flops of
    the mix over the time of the mix. Random inputs, never zeros."""
    hidden, inter = config.hidden_size, config.intermediate_size
    shapes = (("h-h", hidden, hidden, 4), ("h-i", hidden, inter, 1), ("i-h", inter, hidden, 1))
    total_flops = total_time = 0.0
    per_shape = {}
    for name, k, n, times in shapes:
        x = torch.randn(rows, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype) / k**0.5
        b = torch.randn(n, device=device, dtype=dtype)
        flops = 2.0 * rows * k * n
        rate = _rate(
            lambda x=x, w=w, b=b: torch.nn.functional.linear(x, w, b), flops, device, seconds / 3
        )
        per_shape[f"{name} ({rows}x{k} @ {k}x{n})"] = rate / 1e12
        total_flops += times * flops
        total_time += times * flops / rate
    return {"tflops": total_flops / total_time / 1e12, "per_shape_tflops": per_shape}


def square_ceiling(device: torch.device, seconds: float) -> dict:
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    rate = _rate(lambda: torch.mm(a, b), 2.0 * n**3, device, seconds)
    return {"shape": f"{n}x{n}x{n} bf16", "tflops": rate / 1e12}


def datasheet_bf16(device: torch.device) -> dict | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAKS:
        if key in name:
            return {"key": key, "tflops": tflops}
    return None


def d2h_rates(device: torch.device, mib: int, rounds: int = 5) -> dict:
    """Device-to-host copy bytes/s: into pinned memory, into pageable memory, and `.cpu()`
    (allocating pageable memory each time, as a plain `tensor.cpu()` does)."""
    if device.type != "cuda":
        return {"skipped": "the device is the CPU: no device-to-host copy"}
    size = mib << 20
    src = torch.randint(0, 255, (size,), dtype=torch.uint8, device=device)
    targets = {
        "pinned": torch.empty(size, dtype=torch.uint8, pin_memory=True),
        "pageable": torch.empty(size, dtype=torch.uint8),
    }
    out: dict = {"bytes": size}
    for name, target in targets.items():
        target.copy_(src)
        times = []
        for _ in range(rounds):
            sync(device)
            start = time.perf_counter()
            target.copy_(src)
            sync(device)
            times.append(time.perf_counter() - start)
        out[f"{name}_gb_per_s"] = round(size / statistics.median(times) / 1e9, 2)
    times = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        src.cpu()
        times.append(time.perf_counter() - start)
    out["cpu_call_gb_per_s"] = round(size / statistics.median(times) / 1e9, 2)
    return out
