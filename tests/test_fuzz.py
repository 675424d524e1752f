"""Bad input, as a user gives it: the table of cases in fuzz_cases.py run through the command
line in-process (`main([...])`), each case asserting the exit code, one line on stderr naming
the problem, nothing on stdout, and that every file that was there before is byte-identical
after.

Each case runs in its own copy of one small world: texts, CSV/TSV/JSONL/CoNLL files good and
bad, a store written by bertlayers, a saved probe and its run directory, and files a user
cares about that bertlayers must never replace. Here too: JSON results recognised by their
version, and a hub that cannot be reached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import corpus
from bertlayers.cli import main
from fuzz_cases import BAD_UTF8, CASES, Case

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


def test_the_table_is_whole():
    """Every case is there (the CUDA one only where no CUDA device is), once; every error
    case names its problem; every success has a check of its output."""
    assert len(CASES) == 123 + (not torch.cuda.is_available())
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
