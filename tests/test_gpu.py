"""GPU checks: run where CUDA is present (marked `gpu`), skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertlayers import Extractor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def test_cuda_float32_matches_reference_and_half_precision_is_close(
    review_texts, bundled_reference
):
    texts = ["", *review_texts[:40]]
    full = Extractor(device="cuda").extract(texts, layers="all", pooling="mean")
    for i in (0, 1, 20, 40):
        expected = bundled_reference.pooled(texts[i], "mean")
        assert np.abs(full.embeddings[i] - expected).max() <= 1e-4
    for dtype in ("float16", "bfloat16"):
        half = Extractor(device="cuda", dtype=dtype).embed(texts, layers="all", pooling="mean")
        assert half.dtype == np.float32
        cosine = (half * full.embeddings).sum(-1) / (
            np.linalg.norm(half, axis=-1) * np.linalg.norm(full.embeddings, axis=-1)
        )
        assert cosine.min() > 0.99, f"{dtype}: min cosine {cosine.min()}"


def test_cuda_token_rows_through_the_pinned_buffer_match_the_reference(
    review_texts, bundled_reference
):
    # batches of different lengths reuse one pinned host buffer: every record's rows must be
    # its own, not a later batch's
    texts = review_texts[:60]
    result = Extractor(device="cuda").extract_tokens(texts, layers="all", batch_tokens=256)
    for i in (0, 17, 59):
        states, special = bundled_reference.hidden(texts[i])
        expected = states[:, ~special].transpose(1, 0, 2)  # (T, L+1, H)
        assert np.abs(result[i].vectors - expected).max() <= 1e-4
