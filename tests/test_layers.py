"""Layer specs resolve to indices in the Hugging Face convention; errors give the valid range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertlayers import resolve_layers
from bertlayers.core.pooling import combine_layers
from bertlayers.errors import OptionError
from bertlayers.options import Combine


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", (0, 1, 2, 3, 4, 5, 6)),
        (None, (0, 1, 2, 3, 4, 5, 6)),
        ("6", (6,)),
        (6, (6,)),
        (-1, (6,)),
        ("0,6,-1", (0, 6, 6)),
        ("-4:", (3, 4, 5, 6)),
        ("1:7", (1, 2, 3, 4, 5, 6)),
        (":2", (0, 1)),
        ("::3", (0, 3, 6)),
        ([0, -2], (0, 5)),
        ("-7", (0,)),
    ],
)
def test_specs(spec, expected):
    selection = resolve_layers(spec, 6)
    assert selection.indices == expected
    assert selection.deepest == max(expected)


@pytest.mark.parametrize("spec", ["7", -8, "0,9", "1:9", [10]])
def test_out_of_range_names_the_valid_range(spec):
    with pytest.raises(OptionError, match=r"layers 0\.\.6.*-7\.\.-1"):
        resolve_layers(spec, 6)


@pytest.mark.parametrize("spec", ["x", "1,,2", "1:2:3:4", "::0", "5:2", "first"])
def test_malformed_specs_fail_clearly(spec):
    with pytest.raises(OptionError, match="layer"):
        resolve_layers(spec, 6)


def test_combine_modes_shapes_and_values():
    hidden = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (K,B,T,H)
    assert combine_layers(hidden, Combine.STACK) is hidden
    mean = combine_layers(hidden, Combine.MEAN)
    assert mean.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(mean[0], (hidden[0] + hidden[1]) / 2)
    total = combine_layers(hidden, Combine.SUM)
    np.testing.assert_allclose(total[0], hidden[0] + hidden[1])
    concat = combine_layers(hidden, Combine.CONCAT)
    assert concat.shape == (1, 3, 4, 10)
    np.testing.assert_allclose(concat[0, ..., :5], hidden[0])
    np.testing.assert_allclose(concat[0, ..., 5:], hidden[1])
