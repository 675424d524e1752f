"""The opt-in torch.compile mode: the same float32 results as the reference, compiled kernels
kept in a cache directory between runs."""

from __future__ import annotations

import numpy as np
import pytest

from bertlayers import ExtractConfig, Extractor
from conftest import Reference

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, monkeypatch_module):
    path = tmp_path_factory.mktemp("inductor-cache")
    monkeypatch_module.setenv("TORCHINDUCTOR_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_compiled_model_matches_the_reference(tiny_model_dirs, review_texts, cache_dir):
    model = tiny_model_dirs["bert"]
    reference = Reference(model)
    fits = [t for t in review_texts[:60] if len(reference.tokenizer(t)["input_ids"]) <= 40]
    texts = ["Short.", *fits[:12]]  # lengths 3 to 40: batches of several shapes
    compiled = Extractor(str(model), device="cpu", runtime="compile")

    pooled = compiled.extract(texts, layers="all", pooling="mean")
    tokens = compiled.extract_tokens(texts, layers="all")
    for i, text in enumerate(texts):
        expected = reference.pooled(text, "mean")
        assert np.abs(pooled.embeddings[i] - expected).max() <= TOLERANCE
        states, special = reference.hidden(text)
        expected_tokens = states[:, ~special].transpose(1, 0, 2)
        assert np.abs(tokens[i].vectors - expected_tokens).max() <= TOLERANCE

    # early exit: a shallower forward pass is compiled too, and still exact
    shallow = compiled.embed(texts, layers="0,1", pooling="mean")
    full = pooled.embeddings[:, :2]
    assert np.abs(shallow - full).max() <= TOLERANCE

    assert pooled.provenance["compiled"] is True
    assert compiled.identity(ExtractConfig())["compiled"] is True
    assert any(cache_dir.rglob("*")), "compiled kernels are cached for the next run"
