"""`Plan`: an `ExtractConfig` resolved against one model, once.

The layer spec becomes indices in the project's convention and the deepest layer to run; the
length limit, the windows and their stride, the shape of one output row and the batch budget
are fixed. Routes, sinks, the service and the provenance read the plan; nothing downstream
resolves a spec again.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from ..errors import OptionError, Spelled
from ..layers import LayerSelection, resolve_layers
from ..options import Combine, Level, LongMode
from .config import ExtractConfig

CPU_BATCH_TOKENS = 1024  # bench/: 25-30% faster than 8192 on 2 cores (MiniLM, bert-base)
GPU_BATCH_TOKENS = 16384
# Past this a CPU only runs slower: 10M took 3.5x as long as the default, and with
# max_batch_size 100000 12x (and 12.4 GB instead of 725 MB)
CPU_MAX_BATCH_TOKENS = 16384
MEMORY_SHARE = 0.25  # of the machine's memory (the device's on a GPU) one batch may hold
WORKING_STATES = 10  # hidden-sized tensors per token a layer holds while it runs (QKV, FFN)


class BatchCapWarning(Spelled, UserWarning):
    """A batch setting far beyond what helps (or than the machine holds) was capped."""


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
    else:
        kept = len(selection.indices)
        batch_tokens = cap_batch_tokens(
            config, batch_tokens, max_length, hidden_size, kept, device_type
        )
    return Plan(config, selection, hidden_size, max_length, window, stride, batch_tokens)


def batch_bytes(tokens: int, hidden_size: int, kept_layers: int) -> int:
    """Bytes of activations one batch of `tokens` padded tokens holds at its peak (float32):
    the kept layers' states and the working states of the layer running. It matched the
    measured peaks (3.4 GB estimated for 3.56 GB measured, 13.7 for 12.4: MiniLM, 2 cores)."""
    return tokens * hidden_size * 4 * (kept_layers + WORKING_STATES)


def machine_memory(device_type: str) -> int | None:
    """Bytes of memory a batch lives in: the GPU's, else the machine's (the smaller of its RAM
    and a cgroup's limit). Its total, not what is free now: the cap it sets is part of a
    store's identity, which a resumed run must meet again."""
    if device_type == "cuda":
        try:
            import torch

            return int(torch.cuda.mem_get_info()[1])
        except Exception:  # no CUDA after all: nothing to cap by
            return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return int(total)


def cap_batch_tokens(
    config: ExtractConfig,
    batch_tokens: int,
    max_length: int,
    hidden_size: int,
    kept_layers: int,
    device_type: str,
    memory: int | None = -1,
) -> int:
    """`batch_tokens` as asked, or capped (with a `BatchCapWarning` saying why) where it is
    far beyond what helps on a CPU, or where its batches would hold more than `MEMORY_SHARE`
    of `memory` (default: `machine_memory`). A batch holds at most `max_batch_size` texts
    and never more than a chunk, each up to `max_length` tokens."""
    asked = batch_tokens
    reasons = []
    if device_type == "cpu" and batch_tokens > CPU_MAX_BATCH_TOKENS:
        batch_tokens = CPU_MAX_BATCH_TOKENS
        reasons.append(
            f"on a CPU, batches over {CPU_MAX_BATCH_TOKENS} tokens only run slower "
            f"({CPU_BATCH_TOKENS} measured fastest, bench/speed.py)"
        )
    memory = machine_memory(device_type) if memory == -1 else memory
    if memory:
        budget = int(memory * MEMORY_SHARE)
        reach = min(batch_tokens, max(config.max_batch_size, 1) * max_length)
        reach = min(reach, config.chunk_size * max_length)
        if batch_bytes(reach, hidden_size, kept_layers) > budget:
            fits = max(budget // batch_bytes(1, hidden_size, kept_layers), max_length)
            batch_tokens = min(batch_tokens, fits)
            reasons.append(
                f"its batches would hold about {_gb(batch_bytes(reach, hidden_size, kept_layers))}"
                f" of activations, over a quarter of the {_gb(memory)} this "
                f"{'GPU' if device_type == 'cuda' else 'machine'} has"
            )
    if batch_tokens < asked:
        warnings.warn(
            BatchCapWarning(
                f"{{opt:batch_tokens={asked}}} is capped to {batch_tokens}: "
                + "; and ".join(reasons)
            ),
            stacklevel=4,
        )
    return batch_tokens


def _gb(size: int) -> str:
    return f"{size / 2**30:.1f} GB"
