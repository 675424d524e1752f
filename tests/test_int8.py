"""The opt-in int8 runtime: approximate by design, so measured against float32 on the
shipped reviews."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertlayers import Extractor
from bertlayers.backends.int8 import Bfloat16Linear, SmoothedLinear, bf16_matmul_supported
from bertlayers.errors import OptionError


@pytest.fixture(scope="module")
def int8() -> Extractor:
    return Extractor(device="cpu", runtime="int8")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_int8_keeps_every_layer_within_cosine_099(int8, bundled, review_texts):
    texts = review_texts[:100]  # both labels, 5 to 77 wordpieces
    exact = bundled.embed(texts, layers="all")
    approx = int8.embed(texts, layers="all")
    assert approx.shape == exact.shape == (100, 7, 384)
    lowest = _cosines(approx, exact).min(axis=0)  # per layer, the worst text
    assert lowest[0] == pytest.approx(1.0)  # the embedding layer is not quantized
    assert (lowest >= 0.99).all(), lowest
    assert not np.allclose(approx[:, 1:], exact[:, 1:], atol=1e-4)  # it really is int8


def test_int8_replaces_linears_and_says_so(int8):
    modules = [m for layer in int8.encoder._all_layers for m in layer.modules()]
    smoothed = [m for m in modules if isinstance(m, SmoothedLinear)]
    assert len(smoothed) == 6 * 5  # q, k, v, attention output, FFN input in each layer
    ffn_type = Bfloat16Linear if bf16_matmul_supported() else torch.nn.Linear
    assert sum(type(m) is ffn_type for m in modules) == 6  # the FFN outputs
    assert sum(type(m) is torch.nn.Linear for m in modules) == (
        0 if ffn_type is not torch.nn.Linear else 6
    )
    provenance = int8.extract(["a short text"]).provenance
    assert provenance["compute_dtype"] == "int8"
    assert provenance["quantization"]["int8_linears"] == 30
    assert provenance["quantization"]["ffn_output_dtype"] == (
        "bfloat16" if bf16_matmul_supported() else "float32"
    )
    assert int8.identity(int8_config()) != Extractor(device="cpu").identity(int8_config())


def int8_config():
    from bertlayers import ExtractConfig

    return ExtractConfig()


def test_int8_needs_float32_on_the_cpu():
    with pytest.raises(OptionError, match="int8 starts from float32"):
        Extractor(device="cpu", dtype="bfloat16", runtime="int8")


def test_int8_calibrates_a_model_shorter_than_its_calibration_lines(tiny_model_dirs):
    # the tiny RoBERTa has 40 positions: calibration lines longer than that are cut at its
    # limit instead of overflowing the position table
    tiny = Extractor(tiny_model_dirs["roberta"], device="cpu")
    assert tiny.info.max_length < 100
    approx = Extractor(tiny_model_dirs["roberta"], device="cpu", runtime="int8")
    texts = ["a short text", "another one, somewhat longer than the first text"]
    lowest = _cosines(approx.embed(texts, layers="all"), tiny.embed(texts, layers="all")).min(0)
    assert (lowest >= 0.97).all(), lowest
