"""`bertlayers verify`: the engine against transformers run on one text at a time, unpadded, in
float32 on the CPU. It passes where the engine is right (the bundled model, tiny models of other
architectures, int8 and bfloat16 within their cosine bounds) and fails, naming the layers and
the check, where the engine is wrong: an engine whose model was changed after it loaded.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bertlayers.cli.verify import show_report
from bertlayers.core.engine import Engine
from bertlayers.core.verify import COSINE_BOUNDS, FLOAT32_MAX_ABS, verify
from conftest import build_tiny_model
from test_cli import assert_one_line_error, run_cli

LEVELS = {"sentence", "token", "word"}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify-tiny")
    return {arch: build_tiny_model(arch, root) for arch in ("bert", "roberta", "deberta-v2")}


def test_the_bundled_model_passes_on_awkward_texts_and_the_users_file(tmp_path):
    source = tmp_path / "mine.tsv"
    source.write_text(
        "id\ttext\tpair\n"
        "a\tMy own text, with an emoji 😀 and a zero\u200bwidth space\tand its pair\n"
        "b\t日本語の文\tsecond segment\n",
        encoding="utf-8",
    )
    result = run_cli("verify", str(source), "--pair-column", "pair", "--id-column", "id", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["failures"] == []
    assert report["bound"] == {
        "metric": "max_abs",
        "value": FLOAT32_MAX_ABS,
        "why": "float32 compute",
    }
    assert {row["level"] for row in report["rows"]} == LEVELS
    rows = {row["check"]: row for row in report["rows"]}
    for expected in (
        "sentence cls",
        "sentence mean +special",
        "split mean",
        "token truncate",
        "word first, pre-split",
        "combine concat",
        "layers 0:2 (stops early)",
        "shared batches: token",
    ):
        assert expected in rows
    # the user's pairs went through the pair checks beside the four built-in ones
    assert rows["pairs cls"]["texts"] == 6 and rows["pairs mean"]["texts"] == 8
    for row in report["rows"]:
        assert all(0 <= x <= FLOAT32_MAX_ABS for x in row["max_abs"]), row
        assert len(row["columns"]) in (1, 2, 7), row  # combined, layers 0:2, every layer


@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta-v2"])
def test_tiny_architectures_pass(tiny_dirs, arch):
    result = run_cli("verify", "--model", str(tiny_dirs[arch]), "--runtime", "torch", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASSED: 44 checks")


def test_a_broken_engine_fails_naming_the_layers_and_the_checks():
    """Layer 3's feed-forward output zeroed in the engine's model only, after it loaded: the
    reference (loaded from disk) is untouched, so layers 0-2 agree and 3-6 do not."""
    engine = Engine(device="cpu")
    with torch.no_grad():  # in whichever forward pass the engine runs
        if engine.encoder.native is not None:
            engine.encoder.native.layers[2].ff2_w.zero_()
        else:
            engine.encoder.model.encoder.layer[2].output.dense.weight.zero_()
    report = verify(engine)
    assert not report.passed
    by_name = {row.check: row for row in report.rows}
    mean = by_name["sentence mean"]
    assert not mean.passed and mean.columns == [str(i) for i in range(7)]
    assert max(mean.max_abs[:3]) <= FLOAT32_MAX_ABS
    assert min(mean.max_abs[3:]) > 0.01
    assert by_name["layers 0:2 (stops early)"].passed  # stops before the broken layer
    verdict = report.verdict()
    assert verdict.startswith("FAILED: ")
    assert "sentence mean: layer 3, 4, 5, 6 over the bound" in verdict
    assert "token: layer 3, 4, 5, 6 over the bound" in verdict
    table = report.table().splitlines()
    row = next(line for line in table if line.startswith("sentence mean "))
    assert row.count("*") == 4  # the four layers over the bound are marked
    assert json.loads(json.dumps(report.to_dict()))["passed"] is False
    assert show_report(report, quiet=True) == 1  # the command's exit status


def test_int8_passes_its_cosine_bound():
    result = run_cli("verify", "--runtime", "int8", "--json")
    assert result.returncode == 0, result.stdout[-2000:]
    report = json.loads(result.stdout)
    assert report["bound"]["metric"] == "min_cosine"
    assert report["bound"]["value"] == COSINE_BOUNDS["int8"] == 0.97
    lowest = min(min(row["min_cosine"]) for row in report["rows"])
    assert COSINE_BOUNDS["int8"] <= lowest < 0.9999  # approximate, and within its bound
    worst = max(max(row["max_abs"]) for row in report["rows"])
    assert worst > FLOAT32_MAX_ABS  # it really is int8: float32's bound would not hold


def test_bfloat16_passes_its_cosine_bound():
    result = run_cli("verify", "--dtype", "bfloat16", "--device", "cpu", "-q")
    assert result.returncode == 0, result.stdout
    assert "lowest cosine >= 0.99 " in result.stdout and "bfloat16" in result.stdout


def test_python_api_with_texts_only():
    report = verify(None, texts=["a text of mine", ""], built_in=False)
    assert report.passed and report.texts == 2
    assert all(row.texts == 2 for row in report.rows if not row.check.startswith("pairs"))
    assert not any(row.check.startswith("pairs") for row in report.rows)  # no pair was given
    data = report.to_dict()
    assert all(math.isfinite(x) for row in data["rows"] for x in row["max_abs"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "no-such-file.txt"], "input file not found: no-such-file.txt"),
        (["verify", "--runtime", "bogus"], "unknown runtime 'bogus'"),
        (["verify", "--dtype", "float8"], "unknown dtype 'float8'"),
        (["verify", "--limit", "-1"], "must be at least 0"),
    ],
)
def test_bad_input_is_one_line(argv, message):
    assert_one_line_error(run_cli(*argv), message)
