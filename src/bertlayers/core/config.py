"""`ExtractConfig`: everything that decides what is extracted, and how work is batched."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import OptionError
from ..layers import LayerSpec
from ..options import Combine, DType, Level, LongMode, OutputDType, Pooling, WordPooling


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
                raise OptionError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_padding <= 1:
            raise OptionError(f"max_padding must be between 0 and 1, got {self.max_padding}")
        if self.max_length is not None and self.max_length < 4:
            raise OptionError(f"max_length must be at least 4 tokens, got {self.max_length}")
        if self.stride is not None and self.stride < 0:
            raise OptionError(f"stride must be at least 0, got {self.stride}")
        if self.stride is not None and self.long is not LongMode.SPLIT:
            raise OptionError(
                f"stride applies to windows only: use it with long 'split', not '{self.long}'"
            )

    @classmethod
    def from_options(cls, **options: object) -> ExtractConfig:
        """Build a config from keyword options, naming any option that does not exist."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            valid = ", ".join(sorted(known))
            raise OptionError(f"unknown option(s) {', '.join(unknown)}; valid options are: {valid}")
        return cls(**options)  # type: ignore[arg-type]

    @property
    def windowed(self) -> bool:
        """Whether records go the token route (windows, stitching) rather than pooled batches."""
        return self.level is not Level.SENTENCE or self.long is LongMode.SPLIT
