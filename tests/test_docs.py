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


def test_a_results_file_without_metadata_is_shown_with_the_command_to_remake_it():
    result = render_benchmarks.read("bench/results/serve.json")
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
