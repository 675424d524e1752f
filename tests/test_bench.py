"""Smoke runs of the benchmarks on a tiny corpus: they run, time real work and agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import data_file

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a bench script as a user would, offline, on the shared data."""
    data_file("corpus-fortunes.txt")
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
def test_speed_bench_smoke(tmp_path):
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
    for name, row in model["contenders"].items():
        # MFU is against the float32 matmul ceiling, which int8 and bf16 can pass
        ceiling = 4 if name in ("bl-int8", "bl-bf16") else 1.5
        assert row["seconds"] > 0 and row["real_tokens_per_s"] > 0 and 0 < row["mfu"] < ceiling
        assert 0 < row["padding_efficiency"] <= 1
    for name in ("bl-int8", "bl-bf16"):
        cosines = model["contenders"][name]["min_cosine_per_layer"]
        assert len(cosines) == 7 and min(cosines) >= 0.99
    assert model["contenders"]["tutorial"]["padding_efficiency"] == 1
    assert model["bertlayers_vs_tutorial_max_abs_diff"] <= 1e-4
    assert model["openvino_vs_tutorial_max_abs_diff"] <= 1e-4
    assert "bertlayers" in result.stdout and "MFU" in result.stdout


@pytest.mark.slow
def test_memory_bench_smoke(tmp_path):
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


@pytest.mark.slow
def test_gpu_bench_smoke_on_the_cpu(tmp_path):
    """The GPU bench's code, run tiny on the CPU: MFU against a measured bf16 peak."""
    out = tmp_path / "gpu.json"
    result = run_bench("gpu.py", "--smoke", "--device", "cpu", "--out", str(out))
    model = json.loads(out.read_text())["models"][0]
    assert model["peak_source"] == "measured (bf16 matmul)"
    assert model["float32_vs_tutorial_max_abs_diff"] <= 1e-4
    for row in model["contenders"].values():
        assert row["seconds"] > 0 and 0 < row["mfu_vs_bf16_peak"] < 1.5
    for dtype in ("bfloat16", "float16"):
        assert min(model["contenders"][f"bertlayers-{dtype}"]["min_cosine_per_layer"]) > 0.99
    assert "bertlayers-bfloat16" in result.stdout


def test_bf16_peak_table_picks_the_specific_name_first():
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu import BF16_PEAKS

    def peak(name: str) -> float:
        return next(tflops for key, tflops in BF16_PEAKS if key in name)

    assert peak("NVIDIA H100 80GB HBM3") == 989.4
    assert peak("NVIDIA H100 PCIe") == 756.0
    assert peak("NVIDIA L40S") == 362.0
    assert peak("NVIDIA L4") == 121.0
    assert peak("NVIDIA A100-SXM4-80GB") == 312.0


@pytest.mark.slow
def test_backends_bench_smoke(tmp_path):
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
    for row in model["backends"].values():
        assert row["seconds"] > 0 and 0 < row["mfu"] < 1.5
        assert row["max_abs_diff_vs_eager"] <= 1e-4


@pytest.mark.slow
def test_serve_bench_smoke(tmp_path):
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
def test_cli_bench_smoke(tmp_path):
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
def test_ray_bench_smoke(tmp_path):
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
