"""Option enums: strings at the edges, enums inside, valid options in every error."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from .errors import OptionError

E = TypeVar("E", bound="StrEnum")


class StrEnum(str, Enum):
    """A string enum whose `parse` names the valid values when given a wrong one."""

    @classmethod
    def parse(cls: type[E], value: str | E, what: str) -> E:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise OptionError(
                f"unknown {what} '{value}'; valid {what} modes are: {valid}"
            ) from None

    def __str__(self) -> str:
        return self.value


class Pooling(StrEnum):
    """How one sentence vector is made from its token vectors (per layer)."""

    CLS = "cls"  # the first token of the sequence ([CLS] / <s>)
    MEAN = "mean"  # mean over real tokens (special tokens excluded unless asked)
    MAX = "max"  # element-wise max over real tokens
    FIRST = "first"  # first real token (first word piece after [CLS])
    LAST = "last"  # last real token (last word piece before [SEP])


class Combine(StrEnum):
    """How the selected layers are combined, per token, before pooling."""

    STACK = "stack"  # keep every layer: (K, H)
    MEAN = "mean"  # average of the layers: (1, H)
    SUM = "sum"  # sum of the layers: (1, H)
    CONCAT = "concat"  # layers side by side: (1, K*H)


class Runtime(StrEnum):
    """What runs the forward pass (`bertlayers.backends` checks what combines with what)."""

    TORCH = "torch"  # PyTorch, eager: every device and dtype, the reference
    COMPILE = "compile"  # PyTorch through torch.compile (inductor): slow first start, cached
    INT8 = "int8"  # CPU, approximate: int8 matmuls (SmoothQuant), bf16 feed-forward outputs
    OPENVINO = "openvino"  # OpenVINO on the CPU, float32 (the `openvino` extra)


class Backend(StrEnum):
    """Deprecated: the `backend=` spelling of `Runtime` (torch or openvino)."""

    TORCH = "torch"
    OPENVINO = "openvino"


class DType(StrEnum):
    """Floating point types for compute and output."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"

    @property
    def torch(self):
        import torch

        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
            self.value
        ]


class OutputDType(StrEnum):
    """The stored dtypes: those numpy has (bfloat16 has no numpy type)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"

    @property
    def dtype(self) -> DType:
        return DType(self.value)


class Device(StrEnum):
    """Where the model runs; `auto` picks CUDA, then MPS, then the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Level(StrEnum):
    """What one output item is: a text, a token (word piece) or a word."""

    SENTENCE = "sentence"
    TOKEN = "token"
    WORD = "word"


class LongMode(StrEnum):
    """What happens to texts longer than the model's limit."""

    SPLIT = "split"  # sliding windows, stitched: every token gets vectors
    TRUNCATE = "truncate"  # cut to the limit, counted and flagged
    ERROR = "error"  # stop with an error naming the record


class WordPooling(StrEnum):
    """How a word's subword vectors become one word vector."""

    FIRST = "first"
    LAST = "last"
    MEAN = "mean"
    MAX = "max"
