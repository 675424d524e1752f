"""`Plan`: an `ExtractConfig` resolved against one model, once.

The layer spec becomes indices in the project's convention and the deepest layer to run; the
length limit, the windows and their stride, the shape of one output row and the batch budget
are fixed. Routes, sinks, the service and the provenance read the plan; nothing downstream
resolves a spec again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionError
from ..layers import LayerSelection, resolve_layers
from ..options import Combine, Level, LongMode
from .config import ExtractConfig

CPU_BATCH_TOKENS = 1024  # bench/: 25-30% faster than 8192 on 2 cores (MiniLM, bert-base)
GPU_BATCH_TOKENS = 16384


@dataclass(frozen=True)
class Plan:
    """What a config means for one model: resolved layers, limits, windows, row shape."""

    config: ExtractConfig
    selection: LayerSelection
    hidden_size: int
    max_length: int  # tokens per sequence, special tokens included
    window: int | None  # content tokens per window (long='split'), else None
    stride: int | None  # tokens shared by neighbouring windows (long='split'), else None
    batch_tokens: int  # padded tokens per batch

    @property
    def layers(self) -> tuple[int, ...]:
        """The selected hidden states, non-negative, in the order asked."""
        return self.selection.indices

    @property
    def deepest(self) -> int:
        """The deepest layer the forward pass must reach."""
        return self.selection.deepest

    @property
    def row_shape(self) -> tuple[int, int]:
        """`(K, H)` of one output row (a text, token or word); `(1, H)` or `(1, K*H)` when
        the layers are combined."""
        k, h = len(self.layers), self.hidden_size
        if self.config.combine is Combine.STACK:
            return k, h
        return 1, h * k if self.config.combine is Combine.CONCAT else h

    def settings(self) -> dict:
        """The resolved settings a provenance records."""
        config = self.config
        record = {
            "level": config.level.value,
            "layers": list(self.layers),
            "combine": config.combine.value,
            "include_special": config.include_special,
            "max_length": self.max_length,
            "long": config.long.value,
            "output_dtype": config.output_dtype.value,
        }
        if config.level is Level.SENTENCE:
            record["pooling"] = config.pooling.value
        if config.level is Level.WORD:
            record["word_pooling"] = config.word_pooling.value
        if self.window is not None:
            record["window"] = self.window
            record["stride"] = self.stride
        return record

    def batching(self) -> dict:
        """The batching settings, which decide the bytes of every row (a resume checks them)."""
        config = self.config
        return {
            "batch_tokens": self.batch_tokens,
            "max_batch_size": config.max_batch_size,
            "max_padding": config.max_padding,
            "chunk_size": config.chunk_size,
            "chunk_bytes": config.chunk_bytes,
        }


def too_long(record_id: str, n_tokens: int, max_length: int) -> str:
    """The message for a text over the limit under `long='error'`."""
    return (
        f"record {record_id} has {int(n_tokens)} tokens, over the limit of {max_length} "
        "(use {opt:long=split} to embed it in windows, or {opt:long=truncate})"
    )


def resolve_plan(
    config: ExtractConfig,
    num_layers: int,
    hidden_size: int,
    model_max_length: int,
    special_tokens: int,
    device_type: str = "cpu",
) -> Plan:
    """Resolve `config` against a model of `num_layers` layers, `hidden_size` and
    `model_max_length` tokens whose tokenizer adds `special_tokens` around one text."""
    selection = resolve_layers(config.layers, num_layers)
    max_length = model_max_length
    if config.max_length is not None:
        if config.max_length > model_max_length:
            raise OptionError(
                f"{{opt:max_length}} {config.max_length} exceeds this model's limit of "
                f"{model_max_length} tokens"
            )
        max_length = config.max_length
    window = stride = None
    if config.long is LongMode.SPLIT:
        window = max_length - special_tokens
        stride = window // 4 if config.stride is None else config.stride
        if stride >= window:
            raise OptionError(
                f"{{opt:stride}} {stride} must be below the {window} content tokens of a window"
            )
    batch_tokens = config.batch_tokens
    if batch_tokens is None:
        batch_tokens = CPU_BATCH_TOKENS if device_type == "cpu" else GPU_BATCH_TOKENS
    return Plan(config, selection, hidden_size, max_length, window, stride, batch_tokens)
