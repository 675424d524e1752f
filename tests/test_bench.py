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
        "bl-int8",
    }
    for name, row in model["contenders"].items():
        ceiling = 4 if name == "bl-int8" else 1.5  # MFU is against the float32 matmul ceiling
        assert row["seconds"] > 0 and row["real_tokens_per_s"] > 0 and 0 < row["mfu"] < ceiling
        assert 0 < row["padding_efficiency"] <= 1
    cosines = model["contenders"]["bl-int8"]["min_cosine_per_layer"]
    assert len(cosines) == 7 and min(cosines) >= 0.99
    assert model["contenders"]["tutorial"]["padding_efficiency"] == 1
    assert model["bertlayers_vs_tutorial_max_abs_diff"] <= 1e-4
    assert "bertlayers" in result.stdout and "MFU" in result.stdout


@pytest.mark.slow
def test_memory_bench_smoke(tmp_path):
    out = tmp_path / "memory.json"
    run_bench("memory.py", "--texts", "40", "--factor", "2", "--out", str(out))
    report = json.loads(out.read_text())
    assert [run["texts"] for run in report["runs"]] == [40, 80]
    assert all(run["peak_rss_mib"] > 100 and run["output_mib"] > 0 for run in report["runs"])
