"""Opt-in int8 inference on CPUs: faster, within a measured accuracy of float32.

Naive dynamic int8 (every linear layer, one scale per weight tensor) costs the bundled model
up to 0.13 of cosine on its last layer: a few activation channels carry outliers that a single
int8 scale cannot hold. Here:
- weights get one scale per output channel;
- activations are smoothed as in SmoothQuant (Xiao et al. 2023): each input channel of a
  linear layer is divided by s_j = max|x_j|^a / max|w_j|^(1-a) and its weights multiplied by
  it, so outliers move into the weights; the maxima come from a short calibration pass over
  `data/calibration.txt`;
- each encoder layer's feed-forward output projection (the linear with the widest input, fed
  by the GELU) is the one that int8 hurts most (the next layer's cosine down to 0.89): it runs in
  bfloat16 where the CPU has bf16 matmul instructions (AVX512-BF16, AMX), else in float32.
Activations are quantized on the fly, per batch (dynamic int8; VNNI kernels where the CPU
has them). Attention, LayerNorm and the embeddings stay in float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..errors import OptionError
from ..options import DType

if TYPE_CHECKING:
    from ..info import ModelInfo

CALIBRATION = Path(__file__).parent.parent / "data" / "calibration.txt"
ALPHA = 0.8  # migration strength: the best of 0.6-1.0 measured on the bundled model
KEEP_LAST = 0  # final layers left whole in float32: 1 measured +0.002 cosine, -15% speed


class SmoothedLinear(torch.nn.Module):
    """`linear(x / s)`, where the weights of `linear` were multiplied by `s`."""

    def __init__(self, linear: torch.nn.Module, inv_scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)


Target = tuple[torch.nn.Module, str]  # (parent module, attribute name) of a linear


def _targets(
    layers: list[torch.nn.Module], keep_last: int = 0
) -> tuple[list[Target], list[Target]]:
    """The linears of the encoder layers: those to run in int8, and each layer's feed-forward
    output projection (the linear with the widest input), which int8 hurts most."""
    int8, ffn_out = [], []
    for layer in layers[: len(layers) - keep_last]:
        linears = [
            (parent, name, child)
            for parent in layer.modules()
            for name, child in parent.named_children()
            if isinstance(child, torch.nn.Linear)
        ]
        if not linears:
            continue
        widest = max(child.in_features for _, _, child in linears)
        narrowest = min(child.in_features for _, _, child in linears)
        for parent, name, child in linears:
            wide = child.in_features == widest > narrowest
            (ffn_out if wide else int8).append((parent, name))
    return int8, ffn_out


class Bfloat16Linear(torch.nn.Module):
    """A linear layer computed in bfloat16 (weights stored so), float32 in and out."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(linear.weight.detach().to(torch.bfloat16), False)
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        self.bias = torch.nn.Parameter(bias, False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias)
        return out.to(x.dtype)


def bf16_matmul_supported() -> bool:
    """Whether this CPU has bfloat16 matmul instructions (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.inference_mode()
def _calibrate(encoder: Quantizable, modules: list[torch.nn.Linear]) -> list[torch.Tensor]:
    """The largest |activation| per input channel of each module, over the calibration texts."""
    maxima: list[torch.Tensor | None] = [None] * len(modules)

    def hook(index: int):
        def record(_module, inputs):
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
            old = maxima[index]
            maxima[index] = x if old is None else torch.maximum(old, x)

        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        for text in CALIBRATION.read_text(encoding="utf-8").splitlines():
            # cut at the model's own limit: a small model's positions end before a long line's
            batch = encoder.tokenizer(
                text, return_tensors="pt", truncation=True, max_length=encoder.info.max_length
            )
            inputs = {k: v.to(encoder.device) for k, v in batch.items() if k in encoder.input_names}
            encoder.model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [m if m is not None else torch.ones(1) for m in maxima]


class Quantizable(Protocol):
    """What `quantize_int8` needs of an encoder (`core.encoder.Encoder`, which the backends do
    not import): its device and dtype, transformers' model and its encoder layers, and the
    tokenizer, input names and length limit that run the calibration texts."""

    device: torch.device
    dtype: DType
    tokenizer: Callable[..., Any]
    input_names: list[str]
    info: ModelInfo

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def _all_layers(self) -> list: ...


def quantize_int8(encoder: Quantizable, alpha: float = ALPHA, keep_last: int = KEEP_LAST) -> dict:
    """Turn a float32 CPU encoder's linear layers into smoothed dynamic-int8 ones, in place;
    the feed-forward outputs run in bfloat16 where the CPU has bf16 matmuls, else float32.

    Returns what was done, for the provenance.
    """
    if encoder.device.type != "cpu":
        raise OptionError(
            "int8 runs on the CPU; on a GPU use {opt:dtype=float16} or {opt:dtype=bfloat16}"
        )
    if encoder.dtype.torch is not torch.float32:
        raise OptionError("int8 starts from float32 weights: drop {opt:dtype} or set it to float32")
    import torch.ao.nn.quantized.dynamic as quantized
    from torch.ao.quantization import per_channel_dynamic_qconfig

    targets, ffn_out = _targets(encoder._all_layers, keep_last)
    linears = [getattr(parent, name) for parent, name in targets]
    maxima = _calibrate(encoder, linears)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on its int8 tensor API
        for (parent, name), linear, amax in zip(targets, linears, maxima, strict=True):
            weight_max = linear.weight.detach().abs().amax(0).clamp(min=1e-5)
            scale = (amax.clamp(min=1e-5) ** alpha / weight_max ** (1 - alpha)).clamp(min=1e-2)
            linear.weight.data *= scale
            linear.qconfig = per_channel_dynamic_qconfig
            int8 = quantized.Linear.from_float(linear)
            setattr(parent, name, SmoothedLinear(int8, (1.0 / scale).float()))
    bf16 = bf16_matmul_supported()
    if bf16:
        for parent, name in ffn_out:
            setattr(parent, name, Bfloat16Linear(getattr(parent, name)))
    return {
        "scheme": "dynamic int8, per-channel weights, SmoothQuant",
        "alpha": alpha,
        "int8_linears": len(targets),
        "ffn_output_linears": len(ffn_out),
        "ffn_output_dtype": "bfloat16" if bf16 else "float32",
    }
