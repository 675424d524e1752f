"""Bad input, as a user gives it: a table of files and options run through the command line
in-process (`main([...])`), each case asserting the exit code, one line on stderr naming the
problem, nothing on stdout, and that every file that was there before is byte-identical after.

Each case runs in its own copy of one small world: texts, CSV/TSV/JSONL/CoNLL files good and
bad, a store written by bertlayers, a saved probe and its run directory, and files a user
cares about that bertlayers must never replace.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import corpus
from bertlayers import load
from bertlayers.cli import main

BAD_UTF8 = b"fine\nfine\n\xff\xfe broken\n"
Q_TSV = 'label\ttext\npos\t"Great" movie\nneg\t"unbalanced start\nneg\tbad film\npos\tgood film\n'


def _unclosed_csv() -> str:
    rows = ["id,text", *[f"{i},plain text number {i}" for i in range(1, 100)]]
    rows[41] = '41,"this quote is never closed'
    return "\n".join(rows) + "\n"


def _decoder_only_model(root: Path) -> Path:
    from transformers import BertTokenizer, GPT2Config, GPT2Model

    from bertlayers.core.encoder import bundled_model_path

    path = root / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100)).save_pretrained(path)
    BertTokenizer.from_pretrained(bundled_model_path()).save_pretrained(path)
    return path


def _encoder_decoder_model(root: Path) -> Path:
    from transformers import T5Config, T5Model

    path = root / "t5"
    T5Model(
        T5Config(num_layers=1, d_model=16, d_kv=4, d_ff=32, num_heads=2, vocab_size=100)
    ).save_pretrained(path)
    return path


def _make_world(root: Path) -> None:
    """Everything the cases read: inputs good and bad, a store, a probe, a user's files."""
    (root / "f100.txt").write_text("\n".join(corpus.many_texts(100)) + "\n", encoding="utf-8")
    (root / "small.txt").write_text("one text\nanother text\nthe third\n", encoding="utf-8")
    (root / "bad.txt").write_bytes(BAD_UTF8)
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "nul.txt").write_bytes(b"a line\nan\x00other\n")
    (root / "utf16.txt").write_bytes("hello\nworld\n".encode("utf-16"))
    (root / "empty.txt").write_bytes(b"")
    (root / "header-only.csv").write_text("id,text\n", encoding="utf-8")
    (root / "empty.csv").write_bytes(b"")
    (root / "q.tsv").write_text(Q_TSV, encoding="utf-8")
    (root / "unclosed.csv").write_text(_unclosed_csv(), encoding="utf-8")
    (root / "many.csv").write_text("id,text\n1,fine\n2,also fine\n3,too,many,fields,here\n")
    (root / "few.tsv").write_text("label\ttext\npos\tgood\nneg\n", encoding="utf-8")
    (root / "dup.csv").write_text("text,text\na,b\n", encoding="utf-8")
    (root / "cut.jsonl").write_text('{"text": "whole"}\n{"text": "cut off', encoding="utf-8")
    (root / "list.jsonl").write_text('{"text": "fine"}\n["not", "an", "object"]\n')
    (root / "number.jsonl").write_text('{"text": 42}\n', encoding="utf-8")
    (root / "words.jsonl").write_text('{"words": "not a list"}\n', encoding="utf-8")
    (root / "ok.conll").write_text("EU\tB-ORG\nrejects\tO\n\nPeter\tB-PER\n", encoding="utf-8")
    (root / "ragged.conll").write_text("EU\tB-ORG\nrejects\n\nPeter\tB-PER\n", encoding="utf-8")
    (root / "bom-crlf.txt").write_bytes("\ufefffirst line\r\nsecond line\r\n".encode())
    odd = ["I love it 😀🎉", "مرحبا بالعالم", "zero\u200bwidth\u200djoin", "\u2028", "   "]
    (root / "odd.txt").write_text("\n".join(odd) + "\n", encoding="utf-8")
    (root / "huge.txt").write_text("word " * 40_000 + "\nshort\n", encoding="utf-8")
    lines = corpus.REVIEWS.read_text(encoding="utf-8").splitlines()
    (root / "sent.tsv").write_text("\n".join([lines[0], *lines[1:21], *lines[-20:]]) + "\n")
    # what a user has and bertlayers must never replace
    (root / "precious.npy").write_bytes(b"precious")
    (root / "data.json").write_text('{"mine": true}\n', encoding="utf-8")
    (root / "notes.parquet").write_text("not parquet at all\n", encoding="utf-8")
    (root / "labels.tsv").write_text("id\tlabel\n1\tpos\n", encoding="utf-8")
    (root / "mydata").mkdir()
    (root / "mydata" / "notes.txt").write_text("x\n", encoding="utf-8")
    (root / "dir.npy").mkdir()
    (root / "y.npy.partial").mkdir()
    (root / "y.npy.partial" / "mine.txt").write_text("not a staging area\n")
    (root / "emptydir").mkdir()
    (root / "blocked.npz.tmp").mkdir()
    (root / "blocked.npz.tmp" / "precious.txt").write_text("mine\n", encoding="utf-8")
    (root / "sym.npz.tmp").symlink_to("small.txt")
    (root / "in.npy.tmp").write_text("a text\n", encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "dataset").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), root / "dataset" / "part-0.parquet")
    (root / "tb").mkdir()
    (root / "tb" / "projector_config.pbtxt").write_text("mine\n", encoding="utf-8")
    (root / "an").mkdir()
    (root / "an" / "analysis.json").write_text('{"mine": 1}\n', encoding="utf-8")
    (root / "link.npy").symlink_to("small.txt")
    _decoder_only_model(root)
    _encoder_decoder_model(root)
    os.link(root / "small.txt", root / "hard.npy")
    # made by bertlayers: a store, a probe and its run directory
    cwd = Path.cwd()
    os.chdir(root)
    try:
        assert main(["extract", "small.txt", "-o", "e.npy", "--layers", "0,-1", "-q"]) == 0
        assert main(["convert", "e.npy", "e.h5"]) == 0
        for name in ("broken-json", "broken-index", "no-json"):
            for suffix in (".npy", ".json", ".index.npz"):
                shutil.copy(f"e{suffix}", f"{name}{suffix}")
        Path("broken-json.json").write_text("{", encoding="utf-8")
        Path("broken-index.index.npz").write_bytes(b"PK\x03\x04 cut short")
        Path("no-json.json").unlink()
        probe = ["probe", "sent.tsv", "--folds", "2", "--layers", "-1", "-q"]
        assert (
            main([*probe, "-o", "run", "--projection", "none", "--save-model", "clf.joblib"]) == 0
        )
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    _make_world(root)
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under `root`: a file's sha256, a link's target, or 'dir'."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass
class Case:
    """One command line: what it must exit with and say (`message`, in its one error line),
    the new paths it may leave (globs), and for a success, what to check of its output."""

    id: str
    argv: list[str]
    rc: int = 1
    message: str = ""
    stdin: bytes | None = None
    new: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None
    changed: tuple[str, ...] = field(default=())


def _rows(path: str, n: int) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        assert len(load(root / path).ids) == n

    return check


def _layers(path: str, layers: list[int]) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        assert load(root / path).provenance["layers"] == layers

    return check


X = ["-o", "x.npy"]
HINT = "--quoting none"

CASES = [
    # ---------------------------------------------------------------- unreadable input
    Case("missing-input", ["extract", "missing.txt", *X], message="input file not found"),
    Case("input-is-dir", ["extract", "mydata", *X], message="input is a directory"),
    Case("input-under-a-file", ["extract", "small.txt/x", *X], message="input file not found"),
    Case("bad-utf8", ["extract", "bad.txt", *X], message="line 3 is not valid UTF-8"),
    Case("binary", ["extract", "binary.bin", *X], message="line 1 holds a NUL byte"),
    Case("nul-bytes", ["extract", "nul.txt", *X], message="nul.txt: line 2 holds a NUL byte"),
    Case("utf16", ["extract", "utf16.txt", *X], message="line 1 is not valid UTF-8"),
    Case("empty-txt", ["extract", "empty.txt", *X], message="is empty: no texts"),
    Case("empty-csv", ["extract", "empty.csv", *X], message="is empty: no header row"),
    Case("header-only", ["extract", "header-only.csv", *X], message="is empty: no texts"),
    Case("stdin-empty", ["extract", "-", *X], stdin=b"", message="<stdin> is empty"),
    Case("stdin-bad-utf8", ["extract", "-", *X], stdin=BAD_UTF8, message="<stdin>: line 3"),
    # ---------------------------------------------------------------- malformed CSV/TSV/JSONL
    Case(
        "missing-column",
        ["extract", "sent.tsv", *X, "--text-column", "sentence"],
        message="no column 'sentence'; columns are: label, text",
    ),
    Case("stray-quote", ["extract", "q.tsv", *X], message="q.tsv: line 2: text after a closing"),
    Case(
        "unclosed-quote",
        ["extract", "unclosed.csv", *X],
        message="unclosed.csv: line 42: a quote opened here is never closed",
    ),
    Case("too-many-fields", ["extract", "many.csv", *X], message="line 4: expected 2 fields"),
    Case("too-few-fields", ["extract", "few.tsv", *X], message="line 3: expected 2 fields"),
    Case("duplicate-header", ["extract", "dup.csv", *X], message="column 'text' appears twice"),
    Case("cut-jsonl", ["extract", "cut.jsonl", *X], message="line 2 is not valid JSON"),
    Case("list-jsonl", ["extract", "list.jsonl", *X], message="line 2 is a JSON list"),
    Case("number-jsonl", ["extract", "number.jsonl", *X], message="'text' is int, not text"),
    Case(
        "words-not-list",
        ["extract", "words.jsonl", *X, "--words-column", "words"],
        message="column 'words' must be a list of strings",
    ),
    Case(
        "conll-word-column",
        ["extract", "ok.conll", *X, "--word-column", "3", "--level", "word"],
        message="line 1 has 2 column(s), no word column 3",
    ),
    # ---------------------------------------------------------------- options: usage errors
    Case("no-command", [], rc=2, message="the following arguments are required: COMMAND"),
    Case("unknown-command", ["embed"], rc=2, message="invalid choice: 'embed'"),
    Case(
        "unknown-option",
        ["extract", "small.txt", *X, "--frobnicate"],
        rc=2,
        message="unrecognized arguments: --frobnicate",
    ),
    Case("no-output", ["extract", "small.txt"], rc=2, message="-o/--output"),
    Case(
        "batch-tokens-0",
        ["extract", "small.txt", *X, "--batch-tokens", "0"],
        rc=2,
        message="--batch-tokens: must be at least 1, got 0 (see 'bertlayers extract --help')",
    ),
    Case(
        "batch-tokens-word",
        ["extract", "small.txt", *X, "--batch-tokens", "lots"],
        rc=2,
        message="'lots' is not a whole number",
    ),
    Case(
        "max-length-0",
        ["extract", "small.txt", *X, "--max-length", "0"],
        rc=2,
        message="argument --max-length: must be at least 1, got 0",
    ),
    Case(
        "chunk-size-neg",
        ["extract", "small.txt", *X, "--chunk-size", "-5"],
        rc=2,
        message="argument --chunk-size: must be at least 1, got -5",
    ),
    Case("stride-neg", ["extract", "small.txt", *X, "--stride", "-1"], rc=2, message="at least 0"),
    Case(
        "word-column-neg",
        ["extract", "ok.conll", *X, "--word-column", "-1"],
        rc=2,
        message="argument --word-column: must be at least 0, got -1",
    ),
    Case("probe-c-neg", ["probe", "sent.tsv", "--C", "-1"], rc=2, message="above 0, got -1"),
    Case("probe-c-nan", ["probe", "sent.tsv", "--C", "nan"], rc=2, message="above 0, got nan"),
    Case("probe-c-word", ["probe", "sent.tsv", "--C", "big"], rc=2, message="'big' is not a"),
    Case("probe-folds-1", ["probe", "sent.tsv", "--folds", "1"], rc=2, message="at least 2"),
    Case("probe-seed-neg", ["probe", "sent.tsv", "--seed", "-3"], rc=2, message="at least 0"),
    Case("analyze-pairs-0", ["analyze", "e.npy", "--pairs", "0"], rc=2, message="at least 1"),
    # ---------------------------------------------------------------- options: values
    Case("pooling", ["extract", "small.txt", *X, "--pooling", "avg"], message="cls, mean, max"),
    Case("combine", ["extract", "small.txt", *X, "--combine", "avg"], message="stack, mean, sum"),
    Case("level", ["extract", "small.txt", *X, "--level", "para"], message="sentence, token"),
    Case("long", ["extract", "small.txt", *X, "--long", "wrap"], message="split, truncate, error"),
    Case(
        "output-dtype",
        ["extract", "small.txt", *X, "--output-dtype", "bfloat16"],
        message="valid output dtype modes are: float32, float16",
    ),
    Case("dtype", ["extract", "small.txt", *X, "--dtype", "float64"], message="float32, float16"),
    Case("device", ["extract", "small.txt", *X, "--device", "tpu"], message="auto, cpu, cuda"),
    Case(
        "runtime",
        ["extract", "small.txt", *X, "--runtime", "tf"],
        message="unknown runtime 'tf'; valid runtime modes are: torch, compile, int8, openvino",
    ),
    Case(
        "input-format",
        ["extract", "small.txt", *X, "--input-format", "xml"],
        message="unknown input format 'xml'; valid input format modes are: txt, csv",
    ),
    Case("quoting", ["extract", "q.tsv", *X, "--quoting", "some"], message="csv, none"),
    Case(
        "stride-without-split",
        ["extract", "small.txt", *X, "--stride", "64"],
        message="stride applies to windows only",
    ),
    Case(
        "pooling-at-token-level",
        ["extract", "small.txt", *X, "--level", "token", "--pooling", "cls"],
        message="--pooling applies to --level sentence",
    ),
    Case(
        "pair-column-txt",
        ["extract", "small.txt", *X, "--pair-column", "b"],
        message="--pair-column and --id-column need",
    ),
    Case(
        "words-column-txt",
        ["extract", "small.txt", *X, "--words-column", "w"],
        message="--words-column needs a jsonl input",
    ),
    Case(
        "resume-and-overwrite",
        ["extract", "small.txt", *X, "--resume", "--overwrite"],
        message="--resume continues a run and --overwrite starts again: choose one",
    ),
    Case("resume-stdin", ["extract", "-", *X, "--resume"], stdin=b"a\n", message="stdin cannot"),
    Case(
        "int8-bfloat16",
        ["extract", "small.txt", *X, "--runtime", "int8", "--dtype", "bfloat16"],
        message="int8 starts from float32 weights: drop --dtype or set it to float32",
    ),
    Case("layers-range", ["extract", "small.txt", *X, "--layers", "12"], message="layers 0..6"),
    Case("layers-empty", ["extract", "small.txt", *X, "--layers", ""], message="empty layer"),
    Case("layers-word", ["extract", "small.txt", *X, "--layers", "top"], message="invalid layer"),
    Case(
        "max-length",
        ["extract", "small.txt", *X, "--max-length", "9999"],
        message="--max-length 9999 exceeds this model's limit of 512 tokens",
    ),
    *(
        []
        if torch.cuda.is_available()
        else [
            Case(
                "cuda",
                ["extract", "small.txt", *X, "--device", "cuda"],
                message="but no CUDA device is available here",
            )
        ]
    ),
    Case("layers-slice", ["extract", "small.txt", *X, "--layers", "-9:"], message="layers 0..6"),
    Case("model", ["extract", "small.txt", *X, "--model", "no/such"], message="unknown model"),
    Case("decoder-only", ["extract", "small.txt", *X, "--model", "gpt2"], message="decoder-only"),
    Case("t5", ["extract", "small.txt", *X, "--model", "t5"], message="an encoder-decoder model"),
    # ---------------------------------------------------------------- outputs
    Case("output-suffix", ["extract", "small.txt", "-o", "x.xyz"], message="cannot tell"),
    Case(
        "suffix-and-format",
        ["extract", "small.txt", *X, "--format", "parquet"],
        message="'x.npy' ends in .npy, which is npy, but the format asked for is parquet",
    ),
    Case(
        "output-parent-is-a-file",
        ["extract", "small.txt", "-o", "small.txt/x.npy"],
        message="cannot write small.txt/x.npy: small.txt is a file, not a directory",
    ),
    Case(
        "output-onto-the-input-without-a-format",  # the input first, not "cannot tell the format"
        ["extract", "small.txt", "-o", "small.txt"],
        message="small.txt is the input small.txt: write the output to another path",
    ),
    Case("name-too-long", ["extract", "small.txt", "-o", "n" * 300 + ".npy"], message="too long"),
    Case("output-exists", ["extract", "small.txt", "-o", "e.npy"], message="output exists: e.npy"),
    Case(
        "overwrite-a-user-file",
        ["extract", "small.txt", "-o", "precious.npy", "--overwrite"],
        message="precious.npy is a file that is not a .npy array written by bertlayers",
    ),
    Case(
        "sidecar-is-a-user-file",
        ["extract", "small.txt", "-o", "data.npy"],
        message="output exists: data.json",
    ),
    Case(
        "overwrite-a-user-sidecar",
        ["extract", "small.txt", "-o", "data.npy", "--overwrite"],
        message="data.json is a file that is not a bertlayers JSON file",
    ),
    Case(
        "overwrite-a-user-directory",
        ["extract", "small.txt", "-o", "mydata", "--format", "parquet", "--overwrite"],
        message="mydata is a directory that is not a Parquet file or directory of Parquet",
    ),
    Case(
        "overwrite-the-input",
        ["extract", "f100.txt", "-o", "f100.txt", "--format", "npy", "--overwrite"],
        message="f100.txt is the input f100.txt",
    ),
    Case(
        "symlink-to-the-input",
        ["extract", "small.txt", "-o", "link.npy", "--overwrite"],
        message="link.npy is the input small.txt",
    ),
    Case(
        "hard-link-to-the-input",
        ["extract", "small.txt", "-o", "hard.npy", "--overwrite"],
        message="hard.npy is the input small.txt",
    ),
    Case(
        "dotdot-to-the-input",
        ["extract", "small.txt", "-o", "mydata/../small.txt", "--format", "npy", "--overwrite"],
        message="is the input small.txt",
    ),
    Case(
        "output-is-a-directory",
        ["extract", "small.txt", "-o", "dir.npy", "--overwrite"],
        message="dir.npy is a directory, not a .npy array",
    ),
    Case(
        "partial-is-a-user-directory",
        ["extract", "small.txt", "-o", "y.npy", "--overwrite"],
        message="y.npy.partial is a directory that is not a bertlayers staging area",
    ),
    Case("unwritable", ["extract", "small.txt", "-o", "/sys/x.npy"], message="/sys/x.npy"),
    Case(
        "tmp-is-a-user-directory",
        ["convert", "e.npy", "blocked.npz"],
        message="blocked.npz.tmp is in the way: bertlayers writes blocked.npz there first",
    ),
    Case("tmp-is-a-symlink", ["convert", "e.npy", "sym.npz"], message="sym.npz.tmp is in the way"),
    Case(
        "tmp-is-the-input",
        ["extract", "in.npy.tmp", "-o", "in.npy", "--input-format", "txt"],
        message="in.npy.tmp is in the way",
    ),
    Case(
        "overwrite-someone-elses-parquet",
        ["convert", "e.npy", "dataset", "--format", "parquet", "--overwrite"],
        message="dataset is a directory that is not a Parquet file or directory of Parquet",
    ),
    # ---------------------------------------------------------------- stores
    Case("inspect-missing", ["inspect", "nothing.npy"], message="no such store: nothing.npy"),
    Case("inspect-text", ["inspect", "small.txt"], message="'small.txt' is not a store"),
    Case(
        "broken-sidecar",
        ["inspect", "broken-json.npy"],
        message="broken-json.json (the provenance of broken-json.npy) is not readable",
    ),
    Case(
        "broken-index",
        ["inspect", "broken-index.npy"],
        message="broken-index.index.npz (the index of broken-index.npy) is not readable",
    ),
    Case(
        "missing-sidecar",
        ["inspect", "no-json.npy"],
        message="no-json.npy is incomplete: no-json.json (its provenance) is missing",
    ),
    Case(
        "convert-onto-itself",
        ["convert", "e.npy", "e.npy", "--overwrite"],
        message="e.npy is the input e.npy",
    ),
    Case("convert-exists", ["convert", "e.npy", "e.h5"], message="output exists: e.h5"),
    Case(
        "convert-over-a-user-file",
        ["convert", "e.npy", "notes.parquet", "--overwrite"],
        message="notes.parquet is a file that is not a Parquet file",
    ),
    Case(
        "convert-over-a-user-directory",
        ["convert", "e.npy", "mydata", "--format", "parquet", "--overwrite"],
        message="mydata is a directory that is not",
    ),
    Case("convert-parent-is-a-file", ["convert", "e.npy", "small.txt/e.h5"], message="a file, not"),
    Case("convert-suffix", ["convert", "e.npy", "e.npz", "--format", "hdf5"], message=".npz"),
    # ---------------------------------------------------------------- probe, predict, report
    Case("probe-no-labels", ["probe", "small.txt"], message="a probe needs labels"),
    Case(
        "probe-ragged-conll",
        ["probe", "ragged.conll"],
        message="line 2 has 1 column(s), no tag beside the word",
    ),
    Case(
        "probe-projection",
        ["probe", "sent.tsv", "--projection", "tsne"],
        message="unknown projection 'tsne': use pca, umap or none",
    ),
    Case(
        "probe-save-over-text",
        ["probe", "sent.tsv", "--save-model", "small.txt"],
        message="output exists: small.txt",
    ),
    Case(
        "probe-save-over-text-overwrite",
        ["probe", "sent.tsv", "--save-model", "small.txt", "--overwrite"],
        message="small.txt is a file that is not a saved probe (joblib)",
    ),
    Case(
        "probe-save-over-input",
        ["probe", "sent.tsv", "--save-model", "sent.tsv", "--overwrite"],
        message="sent.tsv is the input sent.tsv",
    ),
    Case(
        "probe-results-exist",
        ["probe", "sent.tsv", "-o", "run"],
        message="output exists: run/probe.json",
    ),
    Case(
        "probe-store-is-data",
        ["probe", "sent.tsv", "--store", "sent.tsv"],
        message="'sent.tsv' is not a store",
    ),
    Case(
        "predict-missing-probe",
        ["predict", "nope.joblib", "small.txt"],
        message="probe file not found: nope.joblib",
    ),
    Case("predict-not-a-probe", ["predict", "small.txt", "small.txt"], message="not a saved"),
    Case(
        "predict-onto-its-input",
        ["predict", "clf.joblib", "f100.txt", "-o", "f100.txt"],
        message="f100.txt is the input f100.txt",
    ),
    Case(
        "predict-output-exists",
        ["predict", "clf.joblib", "f100.txt", "-o", "labels.tsv"],
        message="output exists: labels.tsv",
    ),
    Case(
        "predict-parent-is-a-file",
        ["predict", "clf.joblib", "f100.txt", "-o", "small.txt/out.tsv"],
        message="small.txt is a file, not a directory",
    ),
    Case("analyze-text", ["analyze", "small.txt"], message="'small.txt' is not a store"),
    Case(
        "analyze-over-a-user-json",
        ["analyze", "e.npy", "-o", "an", "--overwrite"],
        message="an/analysis.json is a file that is not a bertlayers JSON file",
    ),
    Case(
        "probe-tensorboard-exists",
        ["probe", "sent.tsv", "--tensorboard", "tb"],
        message="output exists: tb/projector_config.pbtxt",
    ),
    Case(
        "report-over-a-tsv",
        ["report", "run", "-o", "sent.tsv"],
        message="output exists: sent.tsv",
    ),
    Case(
        "report-over-a-tsv-overwrite",
        ["report", "run", "-o", "labels.tsv", "--overwrite"],
        message="labels.tsv is a file that is not an HTML page",
    ),
    Case(
        "report-over-its-input",
        ["report", "run", "-o", "run/probe.json", "--overwrite"],
        message="run/probe.json is the input run/probe.json",
    ),
    Case("report-not-a-dir", ["report", "small.txt"], message="not a directory: small.txt"),
    Case("report-empty-dir", ["report", "emptydir"], message="holds no probe.json"),
    # ---------------------------------------------------------------- odd but valid: embedded
    Case(
        "bom-and-crlf",
        ["extract", "bom-crlf.txt", *X, "--layers", "-1", "-q"],
        rc=0,
        new=("x.*",),
        check=lambda root: _same_as_clean(root, ["first line", "second line"]),
    ),
    Case(
        "emoji-rtl-zero-width",
        ["extract", "odd.txt", *X, "--layers", "-1", "-q"],
        rc=0,
        new=("x.*",),
        check=_rows("x.npy", 5),
    ),
    Case(
        "huge-line-truncated",
        ["extract", "huge.txt", *X, "--layers", "0", "-q"],
        rc=0,
        message="warning: 1 of 2 texts were longer than 512 tokens and were truncated (ids: 1)",
        new=("x.*",),
        check=_rows("x.npy", 2),
    ),
    Case(
        "quoting-none",
        ["extract", "q.tsv", *X, "--quoting", "none", "--layers", "0", "-q"],
        rc=0,
        new=("x.*",),
        check=_rows("x.npy", 4),
    ),
    Case(
        "output-in-new-directories",  # every command creates its outputs' missing parents
        ["extract", "small.txt", "-o", "new/sub/x.npy", "--layers", "0", "-q"],
        rc=0,
        new=("new", "new/sub", "new/sub/x.*"),
        check=_rows("new/sub/x.npy", 3),
    ),
    Case(
        "overwrite-our-store",
        ["extract", "small.txt", "-o", "e.h5", "--overwrite", "--layers", "0", "-q"],
        rc=0,
        changed=("e.h5",),
        check=_layers("e.h5", [0]),
    ),
]


def _same_as_clean(root: Path, texts: list[str]) -> None:
    """The BOM and the CRs are not part of the texts: same vectors as the clean texts."""
    stored = load(root / "x.npy").embeddings
    clean = root / "clean.txt"
    clean.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["extract", str(clean), "-o", str(root / "clean.npy"), "--layers", "-1", "-q"]) == 0
    assert np.abs(stored - np.load(root / "clean.npy")).max() <= 1e-6


def test_the_table_is_whole():
    """Every case is there (the CUDA one only where no CUDA device is), once; every error
    case names its problem; every success has a check of its output."""
    assert len(CASES) == 121 + (not torch.cuda.is_available())
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(len(c.message) >= 8 for c in CASES if c.rc != 0), "an error case names nothing"
    assert all(c.check is not None for c in CASES if c.rc == 0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    root = tmp_path / "w"
    shutil.copytree(world, root, symlinks=True)
    (root / "hard.npy").unlink()  # copytree copied the hard link as a file of its own
    os.link(root / "small.txt", root / "hard.npy")
    before = _snapshot(root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin)))
    capsys.readouterr()
    rc = main(case.argv)
    out, err = capsys.readouterr()
    assert rc == case.rc, err
    assert out == "" and "Traceback" not in err
    # what a terminal shows: a progress bar erased with '\r' is not a line
    lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]
    lines = [line for line in lines if line.strip()]
    if case.rc != 0:
        assert len(lines) == 1, err
        assert lines[0].startswith("bertlayers: error: "), err
        assert case.message in lines[0], lines[0]
    else:
        assert len(lines) == (1 if case.message else 0), err
        assert case.message in err
        assert case.check(root) is None  # a check asserts: it returns nothing to ignore
    after = _snapshot(root)
    for path, digest in before.items():
        if path not in case.changed:
            assert after.get(path) == digest, f"{path} was changed or removed"
    added = {p for p in after if p not in before}
    allowed = {p for p in added if any(Path(p).match(g) for g in case.new)}
    assert added <= allowed | {"clean.txt", "clean.npy", "clean.json", "clean.index.npz"}, added


def test_json_result_is_recognised_only_with_its_version(tmp_path):
    """A JSON file is replaced by `--overwrite` only when bertlayers wrote it."""
    from bertlayers.outputs import Kind, Target, check_outputs

    ours = tmp_path / "probe.json"
    ours.write_text(json.dumps({"provenance": {"bertlayers_version": "0.1.0"}}))
    check_outputs([Target(ours, Kind.PROVENANCE)], overwrite=True)
    theirs = tmp_path / "config.json"
    theirs.write_text(json.dumps({"provenance": "mine"}))
    with pytest.raises(Exception, match="not a bertlayers JSON file"):
        check_outputs([Target(theirs, Kind.PROVENANCE)], overwrite=True)


PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def test_unreachable_hub_fails_in_seconds_without_offline_mode(capsys, monkeypatch):
    """Without HF_HUB_OFFLINE, a hub id on a machine that cannot reach the hub is one line
    at once (huggingface_hub alone retries for about 25 s). Where the hub is reachable, the
    hub's address is a closed port on loopback: a hub that cannot be reached all the same."""
    import socket
    import time

    from huggingface_hub import constants

    from bertlayers.core.encoder import hub_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in PROXIES:  # behind a proxy the hub client decides, slowly
        monkeypatch.delenv(name, raising=False)
    if not hub_unreachable("bert-base-uncased"):
        with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub_unreachable("bert-base-uncased")
    start = time.monotonic()
    assert main(["info", "--model", "bert-base-uncased"]) == 1
    assert time.monotonic() - start < 10
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "the hub cannot be reached" in lines[0], lines
