"""GPU speed: bertlayers in float32, bfloat16 and float16, MFU against the dense bf16 peak.

On one CUDA device, in one process and interleaved, on fortunes with news articles spread
through them (as speed.py), every layer mean-pooled:
- `tutorial`: the per-text loop on the GPU, float32;
- `st-encode`: sentence-transformers `encode` on the GPU (last layer), float32 and float16;
- `bertlayers-<dtype>`: `Extractor(device=..., dtype=...)` for float32, bfloat16, float16,
  with each half-precision run's lowest cosine to float32 on every layer.
MFU is the achieved FLOP/s (speed.py's FLOPs per real token) over the device's dense bf16
tensor-core peak, from a table of data-sheet figures by device name, or measured with a large
bf16 matmul where the device is not in the table (and on a CPU, for the smoke run).

    python bench/gpu.py --out bench/results/gpu.json        # on a machine with a GPU
    python bench/gpu.py --smoke --device cpu                # the same code, tiny, on the CPU
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from speed import (
    MAX_LENGTH,
    _masked_mean,
    _quiet_libraries,
    bench_arguments,
    min_cosine_per_layer,
    model_flops,
    run_models,
    token_lengths,
)

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA data sheets, TFLOP/s; the first name
# contained in `torch.cuda.get_device_name()` wins, so the more specific names come first.
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


def measured_bf16_peak(device: torch.device, seconds: float = 1.0) -> float:
    """FLOP/s of a large bf16 matmul on the device: the ceiling where no data sheet applies."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    torch.mm(a, b)
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
        if count % 10 == 0:
            _sync(device)
    _sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start)


def bf16_peak(device: torch.device) -> tuple[float, str]:
    """The device's dense bf16 peak in FLOP/s and where the figure comes from."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in BF16_PEAKS:
            if key in name:
                return tflops * 1e12, f"data sheet ({key})"
    return measured_bf16_peak(device), "measured (bf16 matmul)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Tutorial:
    name = "tutorial"

    def __init__(self, model_dir: Path, device: torch.device) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval().to(device)

    @torch.inference_mode()
    def run(self, texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_LENGTH)
            enc = enc.to(self.device)
            states = torch.stack(self.model(**enc, output_hidden_states=True).hidden_states)
            out.append(_masked_mean(states[:, 0, 1:-1], enc["attention_mask"][0, 1:-1]))
        return torch.stack(out).cpu().numpy()


class STEncode:
    def __init__(self, model_dir: Path, device: torch.device, half: bool) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = "st-encode-fp16" if half else "st-encode"
        self.model = SentenceTransformer(str(model_dir), device=str(device))
        self.model.max_seq_length = MAX_LENGTH
        if half:
            self.model.half()

    def run(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=128, show_progress_bar=False)


class Bertlayers:
    def __init__(self, model_dir: Path, device: torch.device, dtype: str) -> None:
        from bertlayers import Extractor

        self.name = f"bertlayers-{dtype}"
        self.extractor = Extractor(str(model_dir), device=str(device), dtype=dtype)

    def run(self, texts: list[str]) -> np.ndarray:
        return self.extractor.embed(texts, layers="all", pooling="mean")


def bench_model(label: str, model_dir: Path, texts: list[str], rounds: int, device) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    lengths = token_lengths(AutoTokenizer.from_pretrained(model_dir), texts)
    contenders = [
        Tutorial(model_dir, device),
        STEncode(model_dir, device, half=False),
        STEncode(model_dir, device, half=True),
        *(Bertlayers(model_dir, device, d) for d in ("float32", "bfloat16", "float16")),
    ]
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    outputs: dict[str, np.ndarray] = {}
    for c in contenders:  # warm-up: kernels chosen, memory pools filled
        c.run(texts[:64])
    for _ in range(rounds):
        for c in contenders:
            _sync(device)
            start = time.perf_counter()
            outputs[c.name] = c.run(texts)  # every contender returns host arrays: synchronised
            times[c.name].append(time.perf_counter() - start)
    peak, source = bf16_peak(device)
    flops = model_flops(config, lengths)
    real = int(lengths.sum())
    results = {}
    for c in contenders:
        seconds = statistics.median(times[c.name])
        results[c.name] = {
            "seconds": round(seconds, 4),
            "texts_per_s": round(len(texts) / seconds, 1),
            "real_tokens_per_s": round(real / seconds, 1),
            "mfu_vs_bf16_peak": round(flops / seconds / peak, 4),
        }
    base = results["bertlayers-bfloat16"]["seconds"]
    for row in results.values():
        row["x_bertlayers_bf16"] = round(row["seconds"] / base, 2)
    exact = outputs["bertlayers-float32"]
    for dtype in ("bfloat16", "float16"):
        name = f"bertlayers-{dtype}"
        results[name]["min_cosine_per_layer"] = min_cosine_per_layer(outputs[name], exact)
    return {
        "model": label,
        "texts": len(texts),
        "real_tokens": real,
        "bf16_peak_tflops": round(peak / 1e12, 1),
        "peak_source": source,
        "float32_vs_tutorial_max_abs_diff": float(np.abs(exact - outputs["tutorial"]).max()),
        "contenders": results,
    }


def print_table(model: dict) -> None:
    print(
        f"\n{model['model']}: {model['texts']} texts, {model['real_tokens']:,} real tokens, "
        f"bf16 peak {model['bf16_peak_tflops']} TFLOP/s ({model['peak_source']}), "
        f"max |float32 - tutorial| = {model['float32_vs_tutorial_max_abs_diff']:.1e}"
    )
    print(f"{'contender':<20}{'s':>9}{'texts/s':>10}{'tokens/s':>12}{'MFU':>8}{'x bl-bf16':>11}")
    for name, row in model["contenders"].items():
        print(
            f"{name:<20}{row['seconds']:>9.3f}{row['texts_per_s']:>10.1f}"
            f"{row['real_tokens_per_s']:>12.0f}{row['mfu_vs_bf16_peak']:>8.3f}"
            f"{row['x_bertlayers_bf16']:>11.2f}"
        )
    for dtype in ("bfloat16", "float16"):
        cosines = model["contenders"][f"bertlayers-{dtype}"]["min_cosine_per_layer"]
        print(f"{dtype} vs float32, lowest cosine per layer: {cosines}")


def main() -> None:
    _quiet_libraries()
    parser = bench_arguments(__doc__, fortunes=5000, news=100, rounds=3)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu for a smoke run)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA device here (use --device cpu for a smoke run)")
    hardware = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    )
    run_models(
        args,
        {"device": hardware, "torch": torch.__version__},
        lambda label, model_dir, texts, _: bench_model(
            label, model_dir, texts, args.rounds, device
        ),
        print_table,
    )


if __name__ == "__main__":
    main()
