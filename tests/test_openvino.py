"""The OpenVINO backend: the same float32 results as the reference for every architecture,
every layer, pooled and per token, with early exit and long texts split into windows; clear
errors for what it cannot do."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import corpus
from bertlayers import ExtractConfig, Extractor
from bertlayers.errors import OptionError
from conftest import TINY_ARCHS, Reference
from test_cli import assert_one_line_error, run_cli

TOLERANCE = 1e-4


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_every_architecture_matches_the_reference(arch, tiny_model_dirs, review_texts):
    model = tiny_model_dirs[arch]
    reference = Reference(model)
    fits = [t for t in review_texts[:80] if len(reference.tokenizer(t)["input_ids"]) <= 40]
    texts = ["Short.", "a", *fits[:10]]  # lengths 3 to 40: batches of several shapes
    extractor = Extractor(str(model), runtime="openvino")
    layers = extractor.info.num_layers + 1

    pooled = extractor.extract(texts, layers="all", pooling="mean", batch_tokens=128)
    tokens = extractor.extract_tokens(texts, layers="all", batch_tokens=128)
    shallow = extractor.embed(texts, layers="0,1", pooling="mean")  # early exit after layer 1
    assert pooled.embeddings.shape == (len(texts), layers, extractor.info.hidden_size)
    for i, text in enumerate(texts):
        expected = reference.pooled(text, "mean")
        assert np.abs(pooled.embeddings[i] - expected).max() <= TOLERANCE
        assert np.abs(shallow[i] - expected[:2]).max() <= TOLERANCE
        states, special = reference.hidden(text)
        expected_tokens = states[:, ~special].transpose(1, 0, 2)
        assert np.abs(tokens[i].vectors - expected_tokens).max() <= TOLERANCE


def test_bundled_model_long_texts_and_provenance(bundled):
    """Long articles split into overlapping windows and stitched: equal to the torch backend
    (itself held to the reference in test_reference), on every layer and every token."""
    extractor = Extractor(runtime="openvino")
    texts = ["A short one.", *corpus.long_articles(3)]
    got = extractor.extract_tokens(texts, layers="all", long="split")
    want = bundled.extract_tokens(texts, layers="all", long="split")
    for g, w in zip(got, want, strict=True):
        assert g.items == w.items
        assert np.abs(g.vectors - w.vectors).max() <= TOLERANCE
    assert min(len(got[i].items) for i in (1, 2, 3)) > 512  # each of them split into windows
    pooled = extractor.extract(texts, layers="-2,-1", pooling="max", long="split")
    assert pooled.provenance["backend"].startswith("openvino ")
    assert pooled.provenance["compute_dtype"] == "float32"
    assert extractor.identity(ExtractConfig())["backend"] == "openvino"
    assert "backend" not in bundled.identity(ExtractConfig())  # stores from torch runs resume


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "bfloat16"}, "backend 'openvino' computes in float32, not bfloat16"),
        ({"device": "cuda"}, "backend 'openvino' runs on the CPU, not on device 'cuda'"),
        ({}, "unknown runtime 'onnx'; valid runtime modes are: torch, compile, int8, openvino"),
    ],
)
def test_options_it_cannot_honour_are_refused(options, message):
    runtime = "onnx" if not options else "openvino"
    with pytest.raises(OptionError, match=message.replace("(", r"\(")):
        Extractor(runtime=runtime, **options)


def test_missing_package_names_the_extra():
    code = (
        "import sys; sys.modules['openvino'] = None\n"  # as if it were not installed
        "from bertlayers import Extractor\n"
        "from bertlayers.errors import OptionError\n"
        "try:\n    Extractor(runtime='openvino')\n"
        "except OptionError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs the openvino package" in out.stdout
    assert "pip install 'bertlayers[openvino]'" in out.stdout


def test_cli_runtime(tmp_path, bundled):
    texts = ["The first line.", "A second, somewhat longer line of text to embed."]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = run_cli("extract", str(source), "-o", str(out), "--runtime", "openvino", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    expected = bundled.embed(texts, layers="all")
    assert np.abs(np.load(out) - expected).max() <= TOLERANCE
    assert json.loads(out.with_suffix(".json").read_text())["backend"].startswith("openvino")

    bad = run_cli("extract", str(source), "-o", str(tmp_path / "x.npy"), "--runtime", "onnx")
    assert_one_line_error(bad, "unknown runtime 'onnx'")
    assert not (tmp_path / "x.npy").exists()
