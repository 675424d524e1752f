"""The two option sets every front end builds: `ExtractConfig` (what is extracted, and how
work is batched) and `ModelOptions` (which model loads, where, and what runs it).

Both travel as plain JSON values (`to_dict`, `from_dict`): the CLI, the service, the Ray
runner and the provenance read and write them in one spelling. Neither imports torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

from ..errors import OptionError
from ..layers import LayerSpec
from ..options import Combine, DType, Level, LongMode, OutputDType, Pooling, Runtime, WordPooling


def _plain(value: object) -> object:
    """A field's value as JSON: enums by value, tuples and ranges as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | range):
        return list(value)
    return value


def _from_dict(cls, options: dict[str, Any]):
    """`cls(**options)`, naming any option it does not have."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        valid = ", ".join(sorted(known))
        raise OptionError(f"unknown option(s) {', '.join(unknown)}; valid options are: {valid}")
    return cls(**options)


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides what is extracted, and how work is batched.

    `long` defaults to `truncate` at sentence level and `split` at token and word level;
    `stride` (tokens shared by consecutive windows) to a quarter of a window. Batching settings
    (`batch_tokens`, `max_batch_size`, `max_padding`, `chunk_size`, `chunk_bytes`) change speed
    and memory only, never the result.
    """

    layers: LayerSpec = "all"
    level: Level | str = Level.SENTENCE
    pooling: Pooling | str = Pooling.MEAN  # sentence level
    word_pooling: WordPooling | str = WordPooling.FIRST  # word level
    combine: Combine | str = Combine.STACK
    include_special: bool = False
    long: LongMode | str | None = None
    stride: int | None = None
    max_length: int | None = None  # tokens per sequence; None = the model's limit
    output_dtype: DType | str = DType.FLOAT32
    batch_tokens: int | None = None  # padded tokens per batch; None: 1024 on CPU, 16384 else
    max_batch_size: int = 256  # sequences per batch
    max_padding: float = 0.05  # largest share of padding in a batch
    chunk_size: int = 1024  # texts read, sorted and batched together (the sort window)
    chunk_bytes: int = 128 * 2**20  # word level, split sentences: output held before handed on

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.layers, list | range):  # hashable: a plan is kept per config
            set_(self, "layers", tuple(self.layers))
        set_(self, "level", Level.parse(self.level, "level"))
        set_(self, "pooling", Pooling.parse(self.pooling, "pooling"))
        set_(self, "word_pooling", WordPooling.parse(self.word_pooling, "word pooling"))
        set_(self, "combine", Combine.parse(self.combine, "combine"))
        set_(self, "output_dtype", OutputDType.parse(self.output_dtype, "output dtype").dtype)
        if self.long is None:
            set_(
                self, "long", LongMode.TRUNCATE if self.level is Level.SENTENCE else LongMode.SPLIT
            )
        set_(self, "long", LongMode.parse(self.long, "long"))
        for name in ("batch_tokens", "max_batch_size", "chunk_size", "chunk_bytes"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise OptionError(f"{{opt:{name}}} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_padding <= 1:
            raise OptionError(f"max_padding must be between 0 and 1, got {self.max_padding}")
        if self.max_length is not None and self.max_length < 4:
            raise OptionError(
                f"{{opt:max_length}} must be at least 4 tokens, got {self.max_length}"
            )
        if self.stride is not None and self.stride < 0:
            raise OptionError(f"{{opt:stride}} must be at least 0, got {self.stride}")
        if self.stride is not None and self.long is not LongMode.SPLIT:
            raise OptionError(
                "{opt:stride} applies to windows only: use it with {opt:long=split}, "
                f"not long '{self.long}'"
            )

    @classmethod
    def from_options(cls, **options: object) -> ExtractConfig:
        """Build a config from keyword options, naming any option that does not exist."""
        return _from_dict(cls, options)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ExtractConfig:
        """The config `to_dict` wrote (or any subset of its fields)."""
        return _from_dict(cls, options)

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain JSON value; `from_dict` builds the same config again."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @property
    def windowed(self) -> bool:
        """Whether records go the token route (windows, stitching) rather than pooled batches."""
        return self.level is not Level.SENTENCE or self.long is LongMode.SPLIT


@dataclass(frozen=True)
class AttentionConfig:
    """What the attention route returns: maps of the selected layers (1..L) and heads, per
    token or per word (Clark et al.'s merge), raw weights or norm-based (`norms`).

    Windows do not make sense for attention: a text over the limit (the model's, or
    `max_tokens`) is refused unless `long='truncate'`. `batch_bytes` bounds the maps of one
    batch (what a batch's eager attention holds), `chunk_size` the texts sorted together.
    """

    layers: LayerSpec = "all"
    heads: LayerSpec = "all"
    level: Level | str = Level.TOKEN
    long: LongMode | str = LongMode.ERROR
    max_tokens: int | None = None
    norms: bool = False
    batch_bytes: int = 64 * 2**20
    max_batch_size: int = 64
    chunk_size: int = 64

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("layers", "heads"):
            if isinstance(getattr(self, name), list | range):
                set_(self, name, tuple(getattr(self, name)))
        set_(self, "level", Level.parse(self.level, "level"))
        if self.level is Level.SENTENCE:
            raise OptionError(
                "attention maps are per token or per word: {opt:level=token} or {opt:level=word}"
            )
        set_(self, "long", LongMode.parse(self.long, "long"))
        if self.long is LongMode.SPLIT:
            raise OptionError(
                "windows do not make sense for attention (a token attends within one window): "
                "texts over the limit are refused, or cut with {opt:long=truncate}"
            )
        if self.max_tokens is not None and self.max_tokens < 4:
            raise OptionError(f"{{opt:max_tokens}} must be at least 4, got {self.max_tokens}")
        for name in ("batch_bytes", "max_batch_size", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise OptionError(f"{{opt:{name}}} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> AttentionConfig:
        return _from_dict(cls, options)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class ModelOptions:
    """Which model loads, on which device and dtype, and what runs its forward pass.

    `model` is a hub id, a local directory, or None for `BERTLAYERS_MODEL` / the bundled
    all-MiniLM-L6-v2; `runtime` is `torch`, `compile`, `int8` or `openvino`."""

    model: str | None = None
    device: str | None = "auto"
    dtype: DType | str = DType.FLOAT32
    revision: str | None = None
    runtime: Runtime | str = Runtime.TORCH

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DType.parse(self.dtype, "dtype"))
        object.__setattr__(self, "runtime", Runtime.parse(self.runtime, "runtime"))

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ModelOptions:
        return _from_dict(cls, {k: v for k, v in options.items()})

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain JSON value: `Engine(**options.to_dict())` loads the model."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
