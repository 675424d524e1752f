"""The docs' generated pages match their sources, and the renderer's checks can fail.

- the command-line reference is argparse's own help, the HTTP reference is docs/openapi.json,
  and the benchmark tables (and the README's results) are the committed results files: each
  generator, run with `--check` in its own process, finds nothing stale;
- the results renderer knows every committed results file, and its metadata check names what
  a file lacks (and finds nothing missing in a complete one);
- the README stays a front door: at most 200 lines, with the two commands the Makefile runs.

`make docs` (CI, after `make test`) builds the site with `mkdocs build --strict`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "docs" / "scripts"
sys.path.insert(0, str(SCRIPTS))

import docgen  # noqa: E402
import render_benchmarks  # noqa: E402


@pytest.mark.parametrize("script", ["gen_cli.py", "render_openapi.py", "render_benchmarks.py"])
def test_generated_pages_match_their_sources(script):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTLAYERS_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{done.stderr.strip()} (then commit what it rewrote)"
    assert done.stderr == ""


def test_the_cli_reference_holds_every_command_as_argparse_prints_it():
    from bertlayers.cli import build_parser

    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    listed = re.findall(r"^## `bertlayers (\w[\w-]*)`", page, re.M)
    commands = next(
        a.choices for a in build_parser()._actions if hasattr(a, "choices") and a.choices
    )
    assert listed == [*commands, "serve"]
    for name in commands:
        assert f"usage: bertlayers {name} " in page


def test_a_stale_page_is_named_and_fails_the_check(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("old\n")
    assert docgen.write_or_check({page: "new\n"}, check=True, remake="make docs") == 1
    assert f"{page} is stale: run make docs" in capsys.readouterr().err
    assert page.read_text() == "old\n"  # a check writes nothing
    assert docgen.write_or_check({page: "new\n"}, check=False, remake="make docs") == 0
    assert page.read_text() == "new\n"
    assert docgen.write_or_check({page: "new\n"}, check=True, remake="make docs") == 0


def test_every_committed_results_file_is_rendered():
    committed = {
        str(p.relative_to(ROOT))
        for pattern in ("bench/results/*.json", "bench/results/*.txt", "docs/results/*/*.json")
        for p in ROOT.glob(pattern)
    }
    assert committed, "no results files found"
    assert committed - set(render_benchmarks.SPECS) == set()


COMPLETE = {
    "command": "python bench/cli.py --out bench/results/cli.json",
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "date": "2026-12-04T10:00:00+00:00",
    "machine": {"cpu_model": "AMD EPYC 9R14", "cores": 2},
    "versions": {"torch": "2.13.0", "sentence-transformers": "6.2.0", "transformers": "5.24.0"},
}


def test_the_metadata_check_names_what_a_results_file_lacks():
    spec = render_benchmarks.SPECS["bench/results/cli.json"]
    assert render_benchmarks.missing_metadata(COMPLETE, spec) == []
    bare = {"command": COMPLETE["command"], "machine": "x86_64, 2 cores"}
    assert render_benchmarks.missing_metadata(bare, spec) == [
        "git commit",
        "date",
        "CPU model",
        "torch version",
        "sentence-transformers version",
        "transformers version",
    ]
    serve = render_benchmarks.SPECS["bench/results/serve.json"]
    peers = {**COMPLETE, "peers": {"infinity": {"version": "0.0.78"}}}
    assert render_benchmarks.missing_metadata(peers, serve) == ["infinity flags"]
    peers["peers"]["infinity"]["flags"] = ["--engine", "torch"]
    assert render_benchmarks.missing_metadata(peers, serve) == []


def test_a_version_may_be_keyed_with_a_dash_or_an_underscore():
    spec = render_benchmarks.SPECS["bench/results/gpu.json"]
    versions = {"torch": "2.11.0", "transformers": "5.17.0", "sentence_transformers": "6.0.1"}
    assert render_benchmarks.missing_metadata({**COMPLETE, "versions": versions}, spec) == []
    del versions["sentence_transformers"]
    assert render_benchmarks.missing_metadata({**COMPLETE, "versions": versions}, spec) == [
        "sentence-transformers version"
    ]


def _gpu_row(kind: str, dtype: str | None, tokens_per_s: float, **more) -> dict:
    return {"kind": kind, "dtype": dtype, "tokens_per_s": tokens_per_s, **more}


GPU_RUN = {  # shaped like bench/gpu.py's results file, with made-up figures
    **COMPLETE,
    "git": {"commit": "feedfacefeedfacefeedfacefeedfacefeedface", "branch": "x"},
    "git_on_device": {"commit": "badbadbadbadbadbadbadbadbadbadbadbadbad0", "branch": "main"},
    "commit": None,
    "status": "complete",
    "elapsed_s": 41.2,
    "machine": {
        "cpu_model": "Some Xeon",
        "logical_cores": 8,
        "gpu": {"name": "Test GPU 9000", "capability": "8.0", "memory_gib": 40.0},
        "nvidia_smi_start": {"name": "Test GPU 9000", "driver_version": "999.1"},
    },
    "versions": {
        "torch": "9.9.9",
        "cuda": "77.7",
        "transformers": "8.8.8",
        "sentence_transformers": "7.7.7",
    },
    "limits": {"float32_max_abs_diff": 1e-4, "half_min_cosine": 0.99},
    "models": {"tiny": {"num_hidden_layers": 2, "hidden_size": 32, "weights": "random (seeded)"}},
    "checks": [
        {
            "name": "tiny/float32: max |diff|",
            "value": 3e-6,
            "limit": 1e-4,
            "kind": "max",
            "passed": True,
        },
        {
            "name": "tiny/bfloat16: lowest cosine",
            "value": 0.95,
            "limit": 0.99,
            "kind": "min",
            "passed": False,
        },
    ],
    "ceilings": {
        "linear": {
            "tiny": {"rows": 1024, "float32": {"tflops": 12.5}, "bfloat16": {"tflops": 99.25}}
        },
        "square_bf16": {"shape": "64x64x64 bf16", "tflops": 123.4},
        "datasheet_bf16": None,
    },
    "d2h": {
        "bytes": 2**20,
        "pinned_gb_per_s": 5.5,
        "pageable_gb_per_s": 2.25,
        "cpu_call_gb_per_s": 0.75,
    },
    "throughput": {
        "tiny": {
            "64": {
                "texts": 1200,
                "real_tokens": 76800,
                "rows": {
                    "tokenize-bl-sentence": _gpu_row(
                        "tokenizer", None, 400000.0, how="bl-sentence", texts_per_s=6250.0
                    ),
                    "bl-all-pooled-bfloat16": _gpu_row(
                        "bertlayers",
                        "bfloat16",
                        12345.6,
                        texts_per_s=192.9,
                        output="all layer(s) mean-pooled, float32",
                        mfu=0.1234,
                        tokenizer_share=0.25,
                    ),
                },
            }
        }
    },
    "compile": {
        "tiny": {
            "rows": {
                "torch-bfloat16-64": {
                    "runtime": "torch",
                    "dtype": "bfloat16",
                    "length": 64,
                    "tokens_per_s": 1000.0,
                },
                "compile-bfloat16-64": {
                    "runtime": "compile",
                    "dtype": "bfloat16",
                    "length": 64,
                    "tokens_per_s": 1500.0,
                    "speedup_vs_torch": 1.5,
                },
            },
            "first_call_s": {"compile-bfloat16-64": 12.3},
            "agreement": {"bfloat16-64": {"min_cosine_per_layer": [0.99991, 0.99987]}},
            "outcome": "finished",
        }
    },
    "targets": [
        {
            "name": "tiny-tokens-per-s-at-64",
            "what": "tiny, 64-token texts: tokens/s",
            "target": 20000.0,
            "measured": 12345.6,
            "met": False,
            "row": "bl-all-pooled-bfloat16",
        },
        {
            "name": "tiny-vs-st-at-64",
            "what": "tiny over st",
            "target": 2.0,
            "measured": 2.5,
            "met": True,
            "row": "a / b",
        },
    ],
    "skipped": [],
    "errors": [],
}


def test_the_gpu_page_renders_the_rows_of_a_gpu_results_file():
    spec = render_benchmarks.SPECS["bench/results/gpu.json"]
    page = render_benchmarks.gpu_tables(render_benchmarks.Result("gpu.json", spec, GPU_RUN))
    for line in (
        "| GPU | Test GPU 9000 (compute capability 8.0, 40.0 GiB) |",
        "| driver | 999.1 |",
        "| CUDA | 77.7 |",
        "| sentence-transformers | 7.7.7 |",
        "**Exactness: 1 of 2 checks passed.**",
        "max abs diff ≤ 1e-4 on every layer",
        "lowest cosine per layer ≥ 0.99",
        "| tiny/bfloat16: lowest cosine | 0.950000 | ≥ 0.99 | **failed** |",
        "| tiny | 1,024 | 12.5 | 99.2 |  |",
        "Square matmul, 64x64x64 bf16: 123.4 TFLOP/s.",
        "5.50 GB/s into pinned memory, 2.25 GB/s into pageable memory",
        "**tiny, 64-token texts**: 1,200 texts, 76,800 tokens",
        "| `tokenize-bl-sentence` |  | the tokenizer alone (bl-sentence) | 400,000 | 6,250.0 |"
        "  |  |",
        "| `bl-all-pooled-bfloat16` | bfloat16 | bertlayers, all layer(s) mean-pooled, float32 "
        "| 12,346 | 192.9 | 0.123 | 25.0% |",
        "| 64 | bfloat16 | 1,000 | 1,500 | 1.50x | 12.3 | 0.999870 |",
        "| tiny, 64-token texts: tokens/s | 12,346 tokens/s | 20,000 tokens/s | not met |",
        "| tiny over st | 2.50x | 2.00x | **met** | `a / b` |",
        "at commit `feedfacefeed`",
    ):
        assert line in page, line
    assert "badbadbad" not in page  # the device's stale .git is not the tree that ran
    assert "To be re-made" not in page  # sentence_transformers counts as its version


def test_a_results_file_without_metadata_is_shown_with_the_command_to_remake_it():
    name = "bench/results/serve.json"
    spec = render_benchmarks.SPECS[name]
    bare = {"servers": {}, "texts": 10}  # figures, and nothing about the run that made them
    result = render_benchmarks.Result(
        name, spec, bare, render_benchmarks.missing_metadata(bare, spec)
    )
    assert "command" in result.missing
    text = result.source()
    assert "To be re-made" in text
    assert render_benchmarks.SPECS["bench/results/serve.json"].remake in text


def test_the_latest_dated_file_gives_the_verdict():
    spec = render_benchmarks.SPECS["bench/results/cli.json"]
    older = render_benchmarks.Result("a", spec, {**COMPLETE, "date": "2026-01-01T00:00:00+00:00"})
    newer = render_benchmarks.Result("b", spec, {**COMPLETE, "date": "2026-06-01T00:00:00+00:00"})
    undated = render_benchmarks.Result("c", spec, {"command": "x"})
    assert render_benchmarks.latest([undated, older, newer]).name == "b"
    assert render_benchmarks.latest([undated, render_benchmarks.Result("d", spec, {})]).name == "c"


def test_the_soak_trend_is_a_least_squares_line():
    data = json.loads((ROOT / "bench" / "results" / "soak.json").read_text())
    samples = np.array([s for s in data["rss_mb_samples"] if s[0] >= 60])
    slope, intercept = np.polyfit(samples[:, 0], samples[:, 1], 1)
    first, last = samples[0, 0], samples[-1, 0]
    expected = slope * (last - first) / (intercept + slope * first)
    assert render_benchmarks.soak_trend(data) == pytest.approx(expected, rel=1e-9)


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    makefile = (ROOT / "Makefile").read_text()
    for command in ("demo", "test"):
        assert f"make {command}" in readme
        assert re.search(rf"^{command}: ", makefile, re.M), f"the Makefile has no {command}"
    for fact in ("../shared/data", "BERTLAYERS_TEST_DATA", "Ray", "about 20 minutes"):
        assert fact in readme
    assert re.search(r"^docs: ", makefile, re.M) and re.search(r"^docs-serve: ", makefile, re.M)
    assert "make docs" in (ROOT / ".ci" / "run").read_text()
