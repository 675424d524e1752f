"""The GPU check's torch.compile step: compile vs eager in a child process (gpu.py again)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from gpu_checks import COSINE_LIMIT, EXACT_LIMIT, lowest_cosine_per_layer, record_check
from gpu_common import batch_tokens_for, free_memory, log, sync
from gpu_contenders import BLPooled, Work, time_rounds
from gpu_env import shim_absent_packages
from gpu_inputs import fixed_texts, vocab_words
from gpu_report import Budget, Report
from speed import _quiet_libraries, model_flops

SCRIPT = Path(__file__).resolve().with_name("gpu.py")  # the child is the script itself


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
            free_memory(device)
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
            str(SCRIPT),
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
                record_check(
                    report.data["checks"], f"{name}: max |diff|", value, EXACT_LIMIT, "max"
                )
            else:
                value = min(agreement["min_cosine_per_layer"])
                record_check(
                    report.data["checks"], f"{name}: lowest cosine", value, COSINE_LIMIT, "min"
                )
        slot[label] = result
        report.save()
        log(f"compile/{label}: {outcome}")
