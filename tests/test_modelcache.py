"""The model cache (bertlayers.core.modelcache): what transformers makes of a model's files,
read back without transformers, tokenizes exactly as transformers' tokenizer.

Each model is loaded twice under a fresh cache: the first load goes through transformers
(and writes the entry), the second reads the entry; their tokenizers agree on every kind of
call bertlayers makes, over real texts, pairs, pre-split words and truncation, and so do the
extracted rows. A changed tokenizer file makes another entry; a broken entry is ignored; the
cache can be turned off; the weights' fingerprint is remembered only while files are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertlayers import Extractor
from bertlayers.core.encoder import Encoder, bundled_model_path
from bertlayers.core.modelcache import CACHE_ENV, weights_fingerprint
from bertlayers.core.tokenizer import PROBE_TEXTS, CachedTokenizer, same_as
from conftest import TINY_ARCHS

ARCHS = ["bundled", *TINY_ARCHS]
ODD_TEXTS = [
    *PROBE_TEXTS,
    "\u2028line separator\u2029 and NBSP\u00a0here",
    "ALL CAPS AND MiXeD cAsE",
    "tabs\t\tand\r\nwindows lines",
    "a" * 300,
    "¿Qué tal? Ça va. Größe. İstanbul. ǅ",
    "🏳️‍🌈 family 👨‍👩‍👧‍👦 flags 🇫🇷",
]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache directory for the test."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _model(arch: str, tiny_model_dirs) -> str:
    return str(bundled_model_path() if arch == "bundled" else tiny_model_dirs[arch])


def _both(path: str) -> tuple[Encoder, Encoder]:
    """The model loaded through transformers (writing the entry), then from the entry."""
    first = Encoder(path, device="cpu")
    second = Encoder(path, device="cpu")
    assert not isinstance(first.tokenizer, CachedTokenizer)
    assert isinstance(second.tokenizer, CachedTokenizer)
    return first, second


def _texts(review_texts) -> list[str]:
    return [*ODD_TEXTS, *review_texts[:150]]


def _same(ours, theirs, count: int) -> None:
    assert dict(ours) == dict(theirs)
    for i in range(count):
        assert ours.word_ids(i) == theirs.word_ids(i)
        assert ours.sequence_ids(i) == theirs.sequence_ids(i)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_cached_tokenizer_tokenizes_as_transformers(arch, tiny_model_dirs, cache,
                                                        review_texts):  # fmt: skip
    hf, cached = _both(_model(arch, tiny_model_dirs))
    texts = _texts(review_texts)
    pairs = [*texts[1:], texts[0]]
    full = {"return_special_tokens_mask": True, "return_offsets_mapping": True, "verbose": False}
    calls = [
        ((texts,), {**full, "add_special_tokens": False, "return_token_type_ids": False,
                    "return_attention_mask": False}),
        ((texts, pairs), {**full, "truncation": False, "return_token_type_ids": True}),
        ((texts, pairs), {**full, "truncation": "longest_first", "max_length": 24}),
        ((texts,), {"add_special_tokens": True, "truncation": False, "verbose": False}),
        ((texts,), {}),
    ]  # fmt: skip
    for args, kwargs in calls:
        _same(cached.tokenizer(*args, **kwargs), hf.tokenizer(*args, **kwargs), len(texts))
    for text in texts[:20]:
        for kwargs in ({}, {"add_special_tokens": False}):
            _same(cached.tokenizer(text, **kwargs), hf.tokenizer(text, **kwargs), 1)
    words = [t.split() for t in texts if t.split()]
    split = {**full, "add_special_tokens": False, "is_split_into_words": True}
    _same(cached.words_tokenizer(words, **split), hf.words_tokenizer(words, **split), len(words))
    ids = list(range(min(len(hf.tokenizer), 5000)))
    assert cached.tokenizer.convert_ids_to_tokens(ids) == hf.tokenizer.convert_ids_to_tokens(ids)
    assert cached.special_template == hf.special_template
    assert cached.info == hf.info
    assert cached.input_names == hf.input_names and cached.pad_id == hf.pad_id


@pytest.mark.parametrize("arch", ["bundled", "roberta", "xlm-roberta", "deberta-v2"])
def test_rows_from_the_cached_tokenizer_equal_transformers(arch, tiny_model_dirs, cache,
                                                           review_texts):  # fmt: skip
    """Sentence, token and word level, texts and pre-split words: the same rows, items and
    spans either way."""
    path = _model(arch, tiny_model_dirs)
    hf, cached = (Extractor(path, device="cpu") for _ in range(2))
    assert isinstance(cached.encoder.tokenizer, CachedTokenizer)
    texts = _texts(review_texts)[:40]
    np.testing.assert_array_equal(
        cached.extract(texts, layers="all", long="split").embeddings,
        hf.extract(texts, layers="all", long="split").embeddings,
    )
    words = [t.split() for t in texts if t.split()]
    for level_texts in (texts, words):
        ours = cached.extract_words(level_texts, layers="-1", long="split")
        theirs = hf.extract_words(level_texts, layers="-1", long="split")
        for a, b in zip(ours, theirs, strict=True):
            assert a.items == b.items
            np.testing.assert_array_equal(a.spans, b.spans)
            np.testing.assert_array_equal(a.vectors, b.vectors)
    ours = cached.extract_tokens(texts, layers="-1", long="split")
    for a, b in zip(ours, hf.extract_tokens(texts, layers="-1", long="split"), strict=True):
        assert a.items == b.items
        np.testing.assert_array_equal(a.vectors, b.vectors)


def test_other_calls_and_attributes_go_to_transformers(tiny_model_dirs, cache):
    hf, cached = _both(str(tiny_model_dirs["bert"]))
    texts = ["one text", "and a longer second one"]
    ours = cached.tokenizer(texts, padding=True, return_tensors="pt")
    theirs = hf.tokenizer(texts, padding=True, return_tensors="pt")
    assert ours.keys() == theirs.keys()
    assert all((ours[k] == theirs[k]).all() for k in ours)
    ids = theirs["input_ids"][1].tolist()
    assert cached.tokenizer.decode(ids) == hf.tokenizer.decode(ids)
    assert cached.tokenizer.cls_token_id == hf.tokenizer.cls_token_id
    assert len(cached.tokenizer) == len(hf.tokenizer)


def test_an_entry_that_would_tokenize_otherwise_is_refused(tiny_model_dirs, cache):
    """The probes catch a tokenizer state that differs from transformers' (here: no
    lower-casing), so such an entry is never written."""
    hf, cached = _both(str(tiny_model_dirs["bert"]))
    state = dict(cached.tokenizer._state)
    assert same_as(CachedTokenizer(state, lambda words: hf.tokenizer), hf.tokenizer, hf.tokenizer)
    backend = json.loads(state["backend"])
    assert backend["normalizer"]["lowercase"] is True
    backend["normalizer"]["lowercase"] = False
    altered = CachedTokenizer({**state, "backend": json.dumps(backend)}, lambda w: hf.tokenizer)
    assert not same_as(altered, hf.tokenizer, hf.tokenizer)


def test_a_changed_tokenizer_file_makes_another_entry(tiny_model_dirs, cache, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(tiny_model_dirs["bert"], path)
    _both(str(path))
    assert Encoder(str(path), device="cpu").tokenizer("Hello")["input_ids"][1] != 100  # [UNK]
    settings = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**settings, "do_lower_case": False}))
    changed = Encoder(str(path), device="cpu")
    assert not isinstance(changed.tokenizer, CachedTokenizer)  # a new key: transformers again
    assert changed.tokenizer("Hello")["input_ids"][1] == 100  # cased: not in the uncased vocab
    again = Encoder(str(path), device="cpu")
    assert isinstance(again.tokenizer, CachedTokenizer)
    assert again.tokenizer("Hello")["input_ids"] == changed.tokenizer("Hello")["input_ids"]
    assert len(list((cache / "models").glob("*.json"))) == 2


def test_a_broken_entry_is_ignored_and_the_cache_can_be_off(tiny_model_dirs, cache, monkeypatch):
    path = str(tiny_model_dirs["distilbert"])
    _both(path)
    [entry] = (cache / "models").glob("*.json")
    entry.write_text('{"format": 1, "config": ')  # cut short
    reloaded = Encoder(path, device="cpu")
    assert not isinstance(reloaded.tokenizer, CachedTokenizer)
    assert isinstance(Encoder(path, device="cpu").tokenizer, CachedTokenizer)  # rewritten
    monkeypatch.setenv(CACHE_ENV, "off")
    for _ in range(2):
        assert not isinstance(Encoder(path, device="cpu").tokenizer, CachedTokenizer)


def test_the_weights_fingerprint_is_remembered_only_for_unchanged_files(tiny_model_dirs, cache,
                                                                        tmp_path):  # fmt: skip
    path = tmp_path / "model"
    shutil.copytree(tiny_model_dirs["bert"], path)
    weights = path / "model.safetensors"

    def direct() -> str:
        return "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()

    assert weights_fingerprint(path) == direct()
    assert not (cache / "fingerprints").exists()  # files written this instant may change again
    time.sleep(2.1)
    assert weights_fingerprint(path) == direct()
    [remembered] = (cache / "fingerprints").iterdir()
    assert remembered.read_text() == direct()
    assert weights_fingerprint(path) == direct()
    with weights.open("ab") as handle:  # a changed file: its size and change time differ
        handle.write(b"\0")
    assert weights_fingerprint(path) == direct() != remembered.read_text()


def test_a_second_start_up_imports_no_transformers(tmp_path):
    """The first `bertlayers extract` caches what transformers made of the model; the second
    imports no transformers at all (nor its model code: tests/test_native.py)."""
    one = tmp_path / "one.txt"
    one.write_text("A single line of text.\n", encoding="utf-8")
    code = (
        "import json, sys\n"
        "from bertlayers.cli import main\n"
        f"code = main(['extract', {str(one)!r}, '-o', {str(tmp_path / 'o.npy')!r}, '-q',"
        " '--overwrite'])\n"
        "print(json.dumps([code, 'transformers' in sys.modules]))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{CACHE_ENV: str(tmp_path / "cache")})
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs == [[0, True], [0, False]]
