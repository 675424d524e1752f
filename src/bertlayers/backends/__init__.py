"""What runs the forward pass: eager PyTorch, torch.compile, int8 (CPU) or OpenVINO (CPU).

Each runtime gives the encoder a `Forward`: called with a padded batch and the layers wanted,
it returns one `(B, T, H)` tensor per layer, so the encoder calls one thing without branching.
Eager PyTorch runs the native port of the model (`native.py`: BERT, RoBERTa, XLM-R, ELECTRA,
DistilBERT, MPNet in plain torch, no transformers model code to import) where it is exact for
the model's config, else transformers' model (`eager.py`); the other runtimes start from
transformers' model.
`resolve_runtime` is the one place that turns the options (and their deprecated spellings
`int8=`, `torch_compile=`, `backend=`) into a `Runtime`, and `check_runtime` the one place
that says what combines with what.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..errors import OptionError
from ..options import Backend, DType, Runtime

if TYPE_CHECKING:
    import torch


class Forward(Protocol):
    """A forward pass: a padded batch and layer indices -> one `(B, T, H)` tensor per layer."""

    def __call__(
        self, batch: dict[str, torch.Tensor], layers: Sequence[int]
    ) -> list[torch.Tensor]: ...


_INT8_AND_COMPILE = (
    "int8 and torch.compile cannot be combined: the quantized linears recompile at every "
    "batch shape and ran no faster (use one or the other)"
)


def resolve_runtime(
    runtime: Runtime | str | None = None,
    int8: bool = False,
    torch_compile: bool = False,
    backend: Backend | str | None = None,
    stacklevel: int = 1,
) -> Runtime:
    """The runtime asked for, from `runtime=` or the deprecated `int8=`, `torch_compile=`
    and `backend=` (which still work, with a `DeprecationWarning` at the line `stacklevel`
    frames up: 1 is the caller's, 2 its caller's)."""
    legacy: list[Runtime] = []
    if backend is not None and Backend.parse(backend, "backend") is Backend.OPENVINO:
        legacy.append(Runtime.OPENVINO)
    if int8:
        legacy.append(Runtime.INT8)
    if torch_compile:
        legacy.append(Runtime.COMPILE)
    if backend is not None or int8 or torch_compile:
        warnings.warn(
            "int8=, torch_compile= and backend= are deprecated: use runtime="
            + repr((legacy[0] if legacy else Runtime.TORCH).value),
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
    if Runtime.OPENVINO in legacy and len(legacy) > 1:
        other = "int8" if Runtime.INT8 in legacy else "torch.compile"
        raise OptionError(f"backend 'openvino' cannot be combined with {other}")
    if len(legacy) > 1:
        raise OptionError(_INT8_AND_COMPILE)
    if runtime is None:
        return legacy[0] if legacy else Runtime.TORCH
    chosen = Runtime.parse(runtime, "runtime")
    if legacy and legacy[0] is not chosen:
        raise OptionError(
            f"runtime '{chosen.value}' and the deprecated option for '{legacy[0].value}' "
            "disagree: give runtime only"
        )
    return chosen


def check_runtime(
    runtime: Runtime, requested_device: str | None, device_type: str, dtype: DType
) -> None:
    """Refuse what a runtime cannot honour, before the model is loaded."""
    if runtime is Runtime.OPENVINO:
        base = (requested_device or "auto").strip().lower().split(":")[0]
        if base not in ("auto", "cpu"):
            raise OptionError(
                f"backend 'openvino' runs on the CPU, not on device '{requested_device}'"
            )
        if dtype is not DType.FLOAT32:
            raise OptionError(
                f"backend 'openvino' computes in float32, not {dtype.value} "
                f"(the default backend 'torch' computes in {dtype.value})"
            )
    if runtime is Runtime.INT8:
        if device_type != "cpu":
            raise OptionError(
                "int8 runs on the CPU; on a GPU use {opt:dtype=float16} or {opt:dtype=bfloat16}"
            )
        if dtype is not DType.FLOAT32:
            raise OptionError(
                "int8 starts from float32 weights: drop {opt:dtype} or set it to float32"
            )
