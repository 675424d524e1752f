"""What a newcomer ran into (issue #29 §5), each fixed: batch settings far beyond what helps
are capped and said, a store is durable within its first 64 texts, the progress bar counts
tokens, the help says each default once and lists `serve`, every command creates its outputs'
missing directories, `inspect` of an interrupted run names its model and start, and the demo
installs the base package alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import corpus
from bertlayers import ExtractConfig
from bertlayers.core.plan import (
    CPU_MAX_BATCH_TOKENS,
    BatchCapWarning,
    batch_bytes,
    cap_batch_tokens,
    resolve_plan,
)
from bertlayers.core.progress import Progress
from bertlayers.core.stream import FIRST_CHUNK
from bertlayers.io.readers import records_from_texts
from bertlayers.stores import StoreSink, describe
from test_cli import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _interrupted(records, after: int):
    """The records, then Ctrl-C (a real KeyboardInterrupt) when the reader reaches `after`."""
    for count, record in enumerate(records):
        if count == after:
            raise KeyboardInterrupt
        yield record


def _store(extractor, path: Path, records, config: ExtractConfig, **kwargs) -> None:
    sink = StoreSink(path, extractor.identity(config), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor.run(sink.skip_done(records), sink, config)


# ---------------------------------------------------------------- 1. batch caps


def test_batch_tokens_far_beyond_what_helps_are_capped_and_said():
    config = ExtractConfig(batch_tokens=10_000_000, max_batch_size=100_000)
    with pytest.warns(BatchCapWarning) as caught:
        plan = resolve_plan(config, 6, 384, 512, 2, "cpu")
    assert plan.batch_tokens == CPU_MAX_BATCH_TOKENS
    [warning] = caught
    assert str(warning.message).startswith("batch_tokens=10000000 is capped to 16384: on a CPU")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what helps is left alone, and said nothing of
        assert resolve_plan(ExtractConfig(batch_tokens=4096), 6, 384, 512, 2, "cpu").batch_tokens
        assert resolve_plan(ExtractConfig(), 6, 384, 512, 2, "cpu").batch_tokens == 1024


def test_a_batch_is_kept_within_the_memory_the_device_has():
    # bert-base on a 16 GB GPU: 256 texts of 512 tokens would hold 10.5 GB per batch
    config = ExtractConfig(batch_tokens=1_000_000)
    reach = 256 * 512
    assert batch_bytes(reach, 768, 13) > 16 * 2**30 / 4
    with pytest.warns(BatchCapWarning, match=r"over a quarter of the 16.0 GB this GPU has"):
        capped = cap_batch_tokens(config, 1_000_000, 512, 768, 13, "cuda", memory=16 * 2**30)
    assert batch_bytes(capped, 768, 13) <= 16 * 2**30 / 4 < batch_bytes(capped + 512, 768, 13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cap_batch_tokens(config, 16384, 512, 768, 13, "cuda", memory=80 * 2**30) == 16384


def test_the_command_line_says_the_cap_in_one_line_and_the_result_is_unchanged(tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("a first text\nthe second one, longer than the first\nthird\n")
    asked = ["--batch-tokens", "10000000", "--max-batch-size", "100000"]
    capped = run_cli("extract", str(source), "-o", str(tmp_path / "c.npy"), *asked, "-q")
    assert capped.returncode == 0, capped.stderr
    assert capped.stderr.splitlines() == [
        "bertlayers: warning: --batch-tokens 10000000 is capped to 16384: on a CPU, batches "
        "over 16384 tokens only run slower (1024 measured fastest, bench/speed.py)"
    ]
    plain = run_cli("extract", str(source), "-o", str(tmp_path / "p.npy"), "-q")
    assert plain.returncode == 0 and plain.stderr == ""
    assert np.abs(np.load(tmp_path / "c.npy") - np.load(tmp_path / "p.npy")).max() <= 1e-5


# ---------------------------------------------------------------- 4. durable early


@pytest.mark.parametrize("level", ["sentence", "token"])
def test_ctrl_c_within_the_first_chunk_keeps_64_texts_and_resumes_identically(
    tmp_path, bundled, review_texts, level
):
    texts = review_texts[:150]  # one default chunk (1024) would hold them all
    config = ExtractConfig(level=level, layers="0,-1", output_dtype="float16")
    whole = tmp_path / "whole.npy"
    _store(bundled, whole, records_from_texts(texts), config)
    path = tmp_path / "early.npy"
    with pytest.raises(KeyboardInterrupt):
        _store(bundled, path, _interrupted(records_from_texts(texts), 100), config)
    assert describe(path)["texts"] == FIRST_CHUNK == 64  # durable before the Ctrl-C
    _store(bundled, path, records_from_texts(texts), config, resume=True)
    assert path.read_bytes() == whole.read_bytes()  # the resumed run cut its chunks alike
    index = "early.index.npz" if level == "token" else "early.json"
    assert (tmp_path / index).exists()


# ---------------------------------------------------------------- 5. progress by tokens


class _Recording(Progress):
    """A disabled bar that keeps what each update said (texts, tokens)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[int, int]] = []

    def update(self, texts: int, tokens: int) -> None:
        super().update(texts, tokens)
        self.updates.append((texts, tokens))


def test_progress_counts_tokens_and_its_estimate_holds_after_one_chunk(bundled):
    texts = corpus.many_texts(400)  # reviews, then the articles' sentences
    records = list(records_from_texts(texts))
    plan = bundled.engine.plan(ExtractConfig(layers="-1", chunk_size=200))
    bar = _Recording(False, len(records), total_chars=sum(len(t) for t in texts))
    prior = bar.estimate
    estimates = []
    for number, chunk in enumerate(bundled.engine.iter_chunks(records, plan, bar)):
        if number == 0:
            bar.calibrate(sum(len(t) for t in texts[: len(chunk.ids)]))
            estimates.append(bar.estimate)
    total = bar.tokens
    assert bar.texts == 400
    assert abs(estimates[0] - total) / total < 0.1  # one chunk in, the total is known
    assert abs(prior - total) / total < 0.5  # before it: characters / 4
    # why texts were the wrong unit: the first batch (the longest texts) is a far larger share
    # of the work than of the texts
    first_texts, first_tokens = bar.updates[0]
    assert first_tokens / total > 1.5 * first_texts / 400


# ---------------------------------------------------------------- 6. help


@pytest.mark.parametrize("command", ["extract", "probe", "attention", "verify", "convert"])
def test_help_says_each_default_once_and_never_none(command):
    text = run_cli(command, "--help").stdout
    assert "default: None" not in text and "default: False" not in text
    flat = " ".join(text.split())
    assert not re.search(r"default[^()]*\) \(default:", flat), flat


def test_serve_is_listed_in_the_help_and_in_the_invalid_choice_message():
    main_help = run_cli("--help").stdout
    assert re.search(r"^\s+serve\s+the HTTP service", main_help, re.MULTILINE), main_help
    wrong = run_cli("serv")
    assert wrong.returncode == 2 and "'serve'" in wrong.stderr
    assert_one_line_error(run_cli("serve", "--port", "1"), "serve is run by the `bertlayers`")


# ---------------------------------------------------------------- 7. one output rule


def test_every_command_creates_missing_output_directories_only_when_it_writes(tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("one\ntwo\n")
    nested = tmp_path / "runs" / "today" / "e.npy"
    assert run_cli("extract", str(source), "-o", str(nested), "-q").returncode == 0
    assert nested.exists()
    converted = tmp_path / "other" / "deeper" / "e.h5"
    assert run_cli("convert", str(nested), str(converted)).returncode == 0
    assert converted.exists()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\n")
    result = run_cli("extract", str(bad), "-o", str(tmp_path / "never" / "x.npy"), "-q")
    assert_one_line_error(result, "line 2 is not valid UTF-8")
    assert not (tmp_path / "never").exists()  # a command that failed first made nothing
    onto_input = run_cli("extract", str(source), "-o", str(source))
    assert_one_line_error(onto_input, f"{source} is the input {source}")


# ---------------------------------------------------------------- 9. inspect of a partial run


def test_inspect_of_an_interrupted_run_names_its_model_and_start(tmp_path):
    payload = "".join(f"text number {i}\n" for i in range(100)).encode() + b"\xff bad\n"
    out = tmp_path / "e.npy"
    result = subprocess.run(
        [sys.executable, "-m", "bertlayers", "extract", "-", "-o", str(out), "-q"],
        input=payload,
        capture_output=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=600,
    )
    assert result.returncode == 1
    assert "the 64 texts embedded before it are kept in" in result.stderr.decode()
    shown = run_cli("inspect", str(out) + ".partial")
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert lines["model"].strip() == "sentence-transformers/all-MiniLM-L6-v2 (bundled)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", lines["started"].strip())
    assert "created" not in lines and "?" not in shown.stdout
    assert json.loads(run_cli("inspect", str(out), "--json").stdout)["texts"] == 64


# ---------------------------------------------------------------- 12. demo and licence


def test_make_demo_installs_the_base_package_alone(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "demo-venv"
    plan = subprocess.run(
        ["make", "-n", "demo", f"DEMO_VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line]
    assert any(line.endswith("pip install --quiet -e .") for line in installs), plan
    assert all(str(venv) in line for line in installs), plan  # its own venv
    assert "requirements-dev" not in plan and "[all]" not in plan and ".venv/" not in plan


def test_the_licence_is_an_spdx_string_and_builds_without_a_warning(tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import build_meta; import sys; "
            "build_meta.prepare_metadata_for_build_wheel(sys.argv[1])",
            str(tmp_path),
        ],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert "license" not in (build.stdout + build.stderr).lower()
    metadata = next(tmp_path.glob("*.dist-info")) / "METADATA"
    assert "License-Expression: Apache-2.0" in metadata.read_text(encoding="utf-8")
