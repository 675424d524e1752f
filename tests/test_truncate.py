"""`bertlayers truncate` / `truncate_model`: cut models held to their source through
transformers, `bertlayers.Extractor`, sentence-transformers and `bertlayers serve`, on the
bundled all-MiniLM-L6-v2 and every tiny architecture; bad input as one-line errors that leave
every file as it was."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bertlayers import Extractor
from bertlayers.cli import main
from bertlayers.core.encoder import bundled_model_path
from bertlayers.core.truncate import PROVENANCE, WEIGHTS, truncate_model
from conftest import TINY_ARCHS, Reference

TOLERANCE = 1e-5
TEXTS = [
    "The committee will meet on Tuesday.",
    "",
    "a",
    "I love it 😀🎉 zero\u200bwidth and a line\u2028separator",
    "Shares fell 4% after it warned that profits would be lower than expected this year.",
]
BUNDLED_KEEP = 4
TINY_KEEP = 2  # of 3


def _one_line(err: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    return lines[0]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _safetensors_keys(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        return {k: str(handle.get_slice(k).get_dtype()) for k in handle.keys()}  # noqa: SIM118


@pytest.fixture(scope="module")
def cut_tiny(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    """Each tiny architecture cut to 2 of its 3 layers through the Python API."""
    root = tmp_path_factory.mktemp("cut-tiny")
    return {
        arch: truncate_model(source, TINY_KEEP, root / arch)
        for arch, source in tiny_model_dirs.items()
    }


@pytest.fixture(scope="module")
def cut_bundled(tmp_path_factory) -> Path:
    """The bundled model cut to 4 of its 6 layers through the command line, in-process."""
    out = tmp_path_factory.mktemp("cut-bundled") / "minilm-4"
    assert main(["truncate", "--keep-layers", str(BUNDLED_KEEP), "-o", str(out), "-q"]) == 0
    return out


def _pairs(arch: str, tiny_model_dirs, cut_tiny, cut_bundled) -> tuple[Path, Path, int]:
    if arch == "bundled":
        return bundled_model_path(), cut_bundled, BUNDLED_KEEP
    return tiny_model_dirs[arch], cut_tiny[arch], TINY_KEEP


ARCHS = ["bundled", *TINY_ARCHS]


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_state_k_is_the_source_layer_k_through_transformers(
    arch, tiny_model_dirs, cut_tiny, cut_bundled
):
    source, cut, keep = _pairs(arch, tiny_model_dirs, cut_tiny, cut_bundled)
    original, shortened = Reference(source), Reference(cut)
    assert shortened.model.config.num_hidden_layers == keep
    for text in TEXTS:
        expected, _ = original.hidden(text)
        got, _ = shortened.hidden(text)
        assert got.shape[0] == keep + 1  # hidden states 0..K
        assert np.abs(got - expected[: keep + 1]).max() <= TOLERANCE, text
    enc = shortened.tokenizer(TEXTS[0], return_tensors="pt")
    inputs = {k: v for k, v in enc.items() if k in shortened.accepts}
    with torch.inference_mode():
        out = shortened.model(**inputs, output_hidden_states=True)
        normed = original.model.final_norm(out.hidden_states[keep]) if arch == "modernbert" else 0
    if arch == "modernbert":  # the final norm, applied to layer K: what the docs say
        assert torch.allclose(out.last_hidden_state, normed, atol=TOLERANCE)
        assert not torch.allclose(out.last_hidden_state, out.hidden_states[keep], atol=1e-3)
    else:
        assert torch.equal(out.last_hidden_state, out.hidden_states[keep])


@pytest.mark.parametrize("arch", ARCHS)
def test_the_extractor_of_the_cut_model_gives_the_source_layers_0_to_k(
    arch, tiny_model_dirs, cut_tiny, cut_bundled, bundled
):
    source, cut, keep = _pairs(arch, tiny_model_dirs, cut_tiny, cut_bundled)
    original = bundled if arch == "bundled" else Extractor(str(source), device="cpu")
    shortened = Extractor(str(cut), device="cpu")
    assert shortened.info.num_layers == keep
    last = shortened.embed(TEXTS, layers=-1)
    assert np.abs(last - original.embed(TEXTS, layers=keep)).max() <= TOLERANCE
    every = shortened.embed(TEXTS, layers="all", pooling="cls")
    assert np.abs(every - original.embed(TEXTS, layers=f"0:{keep + 1}", pooling="cls")).max() <= (
        TOLERANCE
    )


def test_sentence_transformers_on_the_cut_model_pools_the_source_layer_k(cut_bundled):
    from sentence_transformers import SentenceTransformer

    got = SentenceTransformer(str(cut_bundled), device="cpu").encode(TEXTS, batch_size=2)
    source = Reference(bundled_model_path())
    for text, vector in zip(TEXTS, got, strict=True):
        states, _ = source.hidden(text)
        mean = states[BUNDLED_KEEP].mean(axis=0)  # every token, special ones too, as ST does
        expected = mean / np.linalg.norm(mean)
        cosine = float(vector @ expected / np.linalg.norm(vector))
        assert cosine >= 0.99999, (text, cosine)


# ---------------------------------------------------------------- what is written


@pytest.mark.parametrize("arch", ARCHS)
def test_the_directory_holds_the_cut_config_weights_tokenizer_and_provenance(
    arch, tiny_model_dirs, cut_tiny, cut_bundled
):
    source, cut, keep = _pairs(arch, tiny_model_dirs, cut_tiny, cut_bundled)
    before = json.loads((source / "config.json").read_text())
    after = json.loads((cut / "config.json").read_text())
    count = "n_layers" if arch == "distilbert" else "num_hidden_layers"
    changed = {count: keep}
    if arch == "modernbert":
        changed["layer_types"] = before["layer_types"][:keep]
        changed["tie_last_hidden_states"] = False
    assert after == {**before, **changed}  # nothing else changed

    kept = _safetensors_keys(cut / WEIGHTS)
    full = _safetensors_keys(source / WEIGHTS)
    layer = "transformer.layer" if arch == "distilbert" else "encoder.layer"
    layer = "layers" if arch == "modernbert" else layer
    dropped = {k for k in full if any(k.startswith(f"{layer}.{i}.") for i in range(keep, 99))}
    assert dropped and kept == {k: v for k, v in full.items() if k not in dropped}

    record = json.loads((cut / PROVENANCE).read_text())
    assert record["bertlayers_version"] and record["created"]
    assert record["truncate"]["keep_layers"] == keep
    assert record["truncate"]["final_norm"] == (arch == "modernbert")
    assert record["truncate"]["check"]["max_abs_diff"] <= TOLERANCE
    assert record["truncate"]["weights"]["tensors_dropped"] == len(dropped)
    assert record["source"]["num_layers"] == before.get(count)
    fingerprint = Extractor(str(source), device="cpu").encoder.fingerprint
    assert record["source"]["fingerprint"] == fingerprint
    files = sorted(p.relative_to(cut).as_posix() for p in cut.rglob("*") if p.is_file())
    assert sorted(record["files"]) == [f for f in files if f != PROVENANCE]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (cut / name).read_bytes() == (source / name).read_bytes()
    if arch == "bundled":  # the sentence-transformers modules, unchanged
        for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
            assert (cut / name).read_bytes() == (source / name).read_bytes()
    assert not list(cut.parent.glob("*.tmp-*")) and not list(cut.parent.glob("*.old-*"))


def test_keeping_every_layer_writes_a_copy_with_a_warning(tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "bert-3"
    assert main(["truncate", "--model", str(tiny_model_dirs["bert"]), "--keep-layers", "3",
                 "-o", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "warning: keeping 3 of 3 layers" in err[0]
    assert err[1].startswith(f"bertlayers: wrote {out}: {tiny_model_dirs['bert']} cut to 3 of")
    source = Reference(tiny_model_dirs["bert"])
    expected, _ = source.hidden(TEXTS[0])
    got, _ = Reference(out).hidden(TEXTS[0])
    assert np.abs(got - expected).max() <= TOLERANCE


# ---------------------------------------------------------------- bad input


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["truncate", *argv])
    return code, _one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("keep", "code", "words"),
    [
        ("0", 1, "cannot keep 0 layers of"),
        ("4", 1, "cannot keep 4 layers of"),
        ("-1", 1, "cannot keep -1 layers of"),
        ("two", 2, "'two' is not a whole number"),
    ],
)
def test_k_out_of_range_is_one_line_naming_the_range(
    keep, code, words, tiny_model_dirs, tmp_path, capsys
):
    out = tmp_path / "cut"
    got, err = _run(["--model", str(tiny_model_dirs["bert"]), "--keep-layers", keep, "-o",
                     str(out)], capsys)  # fmt: skip
    assert got == code and words in err, err
    if code == 1:
        assert err.endswith("it has 3 encoder layers, keep 1..3")
    else:
        assert "truncate --help" in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_option_is_a_usage_error(capsys):
    code, err = _run(["-o", "somewhere"], capsys)
    assert code == 2 and "--keep-layers" in err


def test_outputs_that_are_or_hold_the_model_or_are_not_ours_are_refused(
    tiny_model_dirs, tmp_path, capsys
):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dirs["bert"], model)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    link = tmp_path / "link"
    link.symlink_to(model)
    before = _tree(tmp_path)
    cases = [
        (["-o", str(model)], "is the input"),
        (["-o", str(link)], "is the input"),
        (["-o", str(model / ".." / "model"), "--overwrite"], "is the input"),
        (["-o", str(tmp_path)], "holds the input"),
        (["-o", str(model / "cut")], "is inside the model directory"),
        (["-o", str(notes)], "output exists"),
        (["-o", str(notes), "--overwrite"], "is a directory that is not a model directory"),
        (["-o", str(a_file), "--overwrite"], "is a file, not a model directory"),
    ]
    for extra, words in cases:
        code, err = _run(["--model", str(model), "--keep-layers", "2", *extra], capsys)
        assert code == 1 and err.startswith("bertlayers: error:") and words in err, err
        if "--overwrite" in extra and "not a" in words:
            assert err.endswith("--overwrite never replaces it (choose another output)")
    assert _tree(tmp_path) == before


def test_overwrite_replaces_only_an_unchanged_directory_of_ours(tiny_model_dirs, tmp_path, capsys):
    model, out = str(tiny_model_dirs["bert"]), tmp_path / "cut"
    assert _run(["--model", model, "--keep-layers", "2", "-o", str(out)], capsys)[0] == 0
    code, err = _run(["--model", model, "--keep-layers", "1", "-o", str(out)], capsys)
    assert code == 1 and err.endswith(f"output exists: {out} (use --overwrite to replace it)")
    code, err = _run(["--model", model, "--keep-layers", "1", "-o", str(out), "--overwrite"],
                     capsys)  # fmt: skip
    assert code == 0 and "cut to 1 of its 3 layers" in err
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut"]  # nothing set aside is left

    (out / "notes.txt").write_text("mine\n")  # the user's file in it: no longer ours alone
    code, err = _run(["--model", model, "--keep-layers", "2", "-o", str(out), "--overwrite"],
                     capsys)  # fmt: skip
    assert code == 1 and "notes.txt was added since" in err
    (out / "notes.txt").unlink()
    with (out / "config.json").open("a") as handle:  # e.g. edited, or fine-tuned in place
        handle.write("\n")
    code, err = _run(["--model", model, "--keep-layers", "2", "-o", str(out), "--overwrite"],
                     capsys)  # fmt: skip
    assert code == 1 and "config.json has changed since" in err


def test_a_failure_leaves_no_model_and_no_temporary_directory(tiny_model_dirs, tmp_path, capsys):
    """A source whose weight names do not name its layers: refused after the temporary
    directory was made; nothing is left of it."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "renamed"
    shutil.copytree(tiny_model_dirs["bert"], model)
    tensors = load_file(model / WEIGHTS)
    save_file({k.replace("encoder.layer.", "blocks."): v for k, v in tensors.items()},
              model / WEIGHTS, metadata={"format": "pt"})  # fmt: skip
    out = tmp_path / "out" / "cut"
    code, err = _run(["--model", str(model), "--keep-layers", "1", "-o", str(out)], capsys)
    assert code == 1 and "cannot find the weights of the 3 encoder layers" in err, err
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []


def _save_with_bert_tokenizer(model, tokenizer_from: Path, path: Path) -> Path:
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, path / name)
    return path


def test_models_that_cannot_be_cut_are_refused_naming_why(tiny_model_dirs, tmp_path, capsys):
    from transformers import AlbertConfig, AlbertModel, GPT2Config, GPT2Model

    bert = tiny_model_dirs["bert"]
    small = dict(num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    albert = _save_with_bert_tokenizer(
        AlbertModel(AlbertConfig(vocab_size=30522, hidden_size=32, embedding_size=16, **small)),
        bert,
        tmp_path / "albert",
    )
    gpt2 = _save_with_bert_tokenizer(
        GPT2Model(GPT2Config(vocab_size=30522, n_embd=32, n_layer=3, n_head=4)),
        bert,
        tmp_path / "gpt2",
    )
    for model, words in (
        (albert, "runs its 3 layers with 1 shared set(s) of weights"),
        (gpt2, "is a decoder-only model"),
        ("no-such-org/no-such-model", "unknown model 'no-such-org/no-such-model'"),
    ):
        out = tmp_path / "out"
        code, err = _run(["--model", str(model), "--keep-layers", "1", "-o", str(out)], capsys)
        assert code == 1 and words in err, err
        assert not out.exists()


# ---------------------------------------------------------------- serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.serve
def test_serve_answers_with_the_cut_model(cut_bundled, bundled):
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "bertlayers", "serve", "--model", str(cut_bundled),
               "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        response = httpx.post(f"{url}/v1/embed", json={"texts": TEXTS, "layers": "all"},
                              timeout=60)  # fmt: skip
        assert response.status_code == 200, response.text[:500]
        got = response.json()
        assert got["layers"] == list(range(BUNDLED_KEEP + 1))
        vectors = np.asarray(got["embeddings"], dtype=np.float32)
        expected = bundled.embed(TEXTS, layers=f"0:{BUNDLED_KEEP + 1}")
        assert np.abs(vectors - expected).max() <= 1e-4  # JSON floats, as tests/test_serve.py
    finally:
        server.terminate()
        server.wait(60)


def test_a_hub_id_is_cut_from_the_hugging_face_cache_offline(tiny_model_dirs, tmp_path):
    """The hub's layout, offline: a snapshot in the cache, as a download leaves it (a process
    of its own: huggingface_hub reads where its cache is once, at import)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-bert"
    shutil.copytree(tiny_model_dirs["bert"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    out = tmp_path / "cut"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    done = subprocess.run(
        [sys.executable, "-m", "bertlayers", "truncate", "--model", "tiny-org/tiny-bert",
         "--keep-layers", "2", "-o", str(out), "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    source = json.loads((out / PROVENANCE).read_text())["source"]
    assert source["id"] == "tiny-org/tiny-bert" and source["fingerprint"] == commit
    expected, _ = Reference(tiny_model_dirs["bert"]).hidden(TEXTS[0])
    got, _ = Reference(out).hidden(TEXTS[0])
    assert np.abs(got - expected[:3]).max() <= TOLERANCE
