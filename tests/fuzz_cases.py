"""The table of bad input that test_fuzz.py runs: each `Case` is one command line as a user
types it (unreadable and malformed input, usage errors, bad option values, outputs that would
replace what they must not, broken stores, probe/predict/report mistakes, and odd but valid
input that must be embedded), with the exit code, the words its one error line must hold, and
the new files it may leave. The files the cases name are made by test_fuzz.py's `world`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bertlayers import load
from bertlayers.cli import main

BAD_UTF8 = b"fine\nfine\n\xff\xfe broken\n"


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
    Case(
        "convert-suffix",
        ["convert", "e.npy", "e.npz", "--format", "hdf5"],
        message="'e.npz' ends in .npz, which is npz, but the format asked for is hdf5",
    ),
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
