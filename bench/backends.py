"""Backends for the forward pass: PyTorch eager, torch.compile, OpenVINO, ONNX Runtime.

Each backend runs the same length-sorted batches that bertlayers makes (600 fortunes and 15
news articles, every hidden state, float32) in one process, interleaved round-robin. It
reports seconds, MFU (as in speed.py), the start-up cost (export, optimisation or compiling,
and the first batches), and the largest difference from eager PyTorch over the real tokens of
every layer, which must stay within the 1e-4 that bertlayers guarantees. `openvino` is
bertlayers' own `backend="openvino"` (converted straight from PyTorch); `openvino-onnx` runs
the same model exported to ONNX first, and `onnxruntime` that ONNX file fused by ONNX Runtime's
transformer optimizer. These are measured only where installed (`pip install onnxruntime onnx
openvino`); none is a dependency of bertlayers (OpenVINO is its optional extra).

    python bench/backends.py --out bench/results/backends.json
    python bench/backends.py --smoke                        # a few texts, CI
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from speed import (
    _quiet_libraries,
    bench_arguments,
    machine,
    matmul_ceiling,
    model_flops,
    run_models,
)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Eager:
    """bertlayers' own forward pass: PyTorch eager with SDPA."""

    name = "pytorch-eager"

    def __init__(self, model_dir: Path, tmp: Path) -> None:
        from bertlayers import Extractor

        self.encoder = self._extractor(Extractor, model_dir).encoder
        self.layers = list(range(self.encoder.info.num_layers + 1))

    def _extractor(self, cls, model_dir: Path):
        return cls(str(model_dir), device="cpu")

    def forward(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        return self.encoder.hidden_states(batch, self.layers).numpy()


class Compiled(Eager):
    """`Extractor(runtime="compile")`: inductor, dynamic shapes, frozen weights."""

    name = "torch-compile"

    def _extractor(self, cls, model_dir: Path):
        return cls(str(model_dir), device="cpu", runtime="compile")


class OpenVINOBackend(Eager):
    """`Extractor(runtime="openvino")`: bertlayers' OpenVINO backend, float32."""

    name = "openvino"

    def _extractor(self, cls, model_dir: Path):
        return cls(str(model_dir), runtime="openvino")


def _exported(model_dir: Path, tmp: Path) -> tuple[Path, object]:
    """The model exported to ONNX with every hidden state as one output `(L+1, B, T, H)`."""
    from transformers import AutoConfig, AutoModel

    from bertlayers.backends.openvino import SelectedStates

    model = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    path = tmp / f"{model_dir.name}.onnx"
    dummy = tuple(torch.ones(2, 16, dtype=torch.long) for _ in INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS}
    torch.onnx.export(
        SelectedStates(model, INPUTS, range(model.config.num_hidden_layers + 1)),
        dummy,
        str(path),
        input_names=list(INPUTS),
        output_names=["hidden"],
        dynamic_axes={**axes, "hidden": {1: "batch", 2: "tokens"}},
        opset_version=17,
        dynamo=False,
    )
    return path, AutoConfig.from_pretrained(model_dir)


class OnnxRuntime:
    """ONNX Runtime on the CPU, graph fused by its transformer optimizer (model_type bert)."""

    name = "onnxruntime"

    def __init__(self, model_dir: Path, tmp: Path) -> None:
        import onnxruntime as ort
        from onnxruntime.transformers import optimizer

        path, config = _exported(model_dir, tmp)
        fused = optimizer.optimize_model(
            str(path),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
        )
        fused_path = tmp / f"{model_dir.name}-fused.onnx"
        fused.save_model_to_file(str(fused_path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(fused_path), options, providers=["CPUExecutionProvider"]
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        return self.session.run(None, {name: batch[name].numpy() for name in INPUTS})[0]


class OpenVINOFromOnnx:
    """OpenVINO on the ONNX export, float32 inference precision (it would pick bf16 here)."""

    name = "openvino-onnx"

    def __init__(self, model_dir: Path, tmp: Path) -> None:
        import openvino as ov

        path, _ = _exported(model_dir, tmp)
        core = ov.Core()
        self.model = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()},
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        result = self.model({name: batch[name].numpy() for name in INPUTS})
        return next(iter(result.values()))


def available(kind: type) -> bool:
    """Whether the packages a backend needs are installed."""
    modules = {
        "onnxruntime": ("onnxruntime", "onnx"),
        "openvino": ("openvino",),
        "openvino-onnx": ("openvino", "onnx"),
    }.get(kind.name, ())
    try:
        for module in modules:
            __import__(module)
    except ImportError:
        return False
    return True


def bench_model(label: str, model_dir: Path, texts: list[str], rounds: int, tmp: Path) -> dict:
    from transformers import AutoConfig

    from bertlayers import Extractor
    from bertlayers.core.batching import collate, plan_batches, tokenize
    from bertlayers.io.readers import records_from_texts

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = Extractor(str(model_dir), device="cpu").encoder.tokenizer
    encoded = tokenize(tokenizer, list(records_from_texts(texts)), 512, True)
    batches = [collate(encoded, rows, 0) for rows in plan_batches(encoded.lengths, 1024, 256, 0.05)]
    backends, startup, skipped = [], {}, []
    for kind in (Eager, Compiled, OpenVINOBackend, OpenVINOFromOnnx, OnnxRuntime):
        if not available(kind):
            skipped.append(kind.name)
            continue
        start = time.perf_counter()
        backend = kind(model_dir, tmp)
        for batch in batches[:2]:
            backend.forward(batch)
        startup[kind.name] = round(time.perf_counter() - start, 1)
        backends.append(backend)
    times: dict[str, list[float]] = {b.name: [] for b in backends}
    worst = dict.fromkeys(times, 0.0)
    for round_ in range(rounds):
        for backend in backends:
            outputs = []
            start = time.perf_counter()
            for batch in batches:
                outputs.append(backend.forward(batch))
            times[backend.name].append(time.perf_counter() - start)
            if round_ == 0:  # every layer, real tokens only, against eager PyTorch
                if backend.name == Eager.name:
                    eager = outputs
                for out, ref, batch in zip(outputs, eager, batches, strict=True):
                    mask = batch["attention_mask"].numpy().astype(bool)
                    diff = float(np.abs(out - ref)[:, mask].max())
                    worst[backend.name] = max(worst[backend.name], diff)
    ceiling = matmul_ceiling(config)
    flops = model_flops(config, encoded.lengths)
    results = {}
    base = statistics.median(times[Eager.name])
    for name, values in times.items():
        seconds = statistics.median(values)
        results[name] = {
            "seconds": round(seconds, 3),
            "mfu": round(flops / seconds / ceiling, 3),
            "vs_eager": round(base / seconds, 3),
            "startup_s": startup[name],
            "max_abs_diff_vs_eager": worst[name],
        }
    return {
        "model": label,
        "texts": len(texts),
        "batches": len(batches),
        "matmul_ceiling_gflops": round(ceiling / 1e9, 1),
        "rounds": rounds,
        "backends": results,
        "not_installed": skipped,
    }


def print_table(model: dict) -> None:
    print(
        f"\n{model['model']}: {model['texts']} texts in {model['batches']} batches, "
        f"fp32 matmul ceiling {model['matmul_ceiling_gflops']} GFLOP/s"
    )
    print(f"{'backend':<15}{'s':>8}{'MFU':>7}{'x eager':>9}{'start-up s':>12}{'max diff':>11}")
    for name, row in model["backends"].items():
        print(
            f"{name:<15}{row['seconds']:>8.2f}{row['mfu']:>7.2f}{row['vs_eager']:>9.2f}"
            f"{row['startup_s']:>12.1f}{row['max_abs_diff_vs_eager']:>11.1e}"
        )
    if model["not_installed"]:
        print("not installed, not measured: " + ", ".join(model["not_installed"]))


def main() -> None:
    _quiet_libraries()
    args = bench_arguments(__doc__, fortunes=600, news=15, rounds=3).parse_args()
    run_models(
        args,
        {"machine": machine()},
        lambda label, model_dir, texts, tmp: bench_model(label, model_dir, texts, args.rounds, tmp),
        print_table,
    )


if __name__ == "__main__":
    main()
