"""`Extractor`: the Python API over one `Engine` — embed lists in memory, or stream to a sink.

It keeps the API the library has always had: `embed` (an array), `extract`, `extract_tokens`
and `extract_words` (results with ids, token counts and provenance), `run` (stream into a
sink, e.g. a store). The work is the engine's (`engine.py`) and the streaming run's
(`stream.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ..backends import resolve_runtime
from ..errors import InputError, OptionError
from ..info import ModelInfo
from ..io.readers import Record, as_records, records_from_words
from ..layers import LayerSelection, LayerSpec
from ..maps import AttentionMaps
from ..options import Backend, DType, Level, Runtime
from ..provenance import PerTextLog
from ..results import ArraySource, RaggedEmbeddings, SentenceEmbeddings, make_result
from ..sinks import MemorySink, Reserve, Sink
from .config import AttentionConfig, ExtractConfig
from .encoder import Encoder
from .engine import Engine
from .progress import Progress
from .stream import stream, warn_truncated


class Extractor:
    """Per-layer embeddings from one encoder: load once, embed many times.

    `model` is a hub id, a local directory, or None for `BERTLAYERS_MODEL` / the bundled
    all-MiniLM-L6-v2. `dtype` is the compute dtype; outputs are float32 unless asked otherwise.
    `runtime` is what runs the forward pass: `torch` (default), `compile` (torch.compile: slow
    start, cached between runs), `int8` (CPU, approximate: see `bertlayers.backends.int8`),
    `openvino` (CPU, float32, the `openvino` extra). `int8=`, `torch_compile=` and `backend=`
    are the deprecated spellings of `runtime`. `engine` wraps an `Engine` already loaded.
    """

    def __init__(
        self,
        model: str | None = None,
        device: str | None = "auto",
        dtype: DType | str = DType.FLOAT32,
        revision: str | None = None,
        int8: bool = False,
        torch_compile: bool = False,
        backend: Backend | str | None = None,
        runtime: Runtime | str | None = None,
        engine: Engine | None = None,
    ) -> None:
        if engine is None:
            chosen = resolve_runtime(runtime, int8, torch_compile, backend, stacklevel=2)
            engine = Engine(model, device=device, dtype=dtype, revision=revision, runtime=chosen)
        self.engine = engine

    @property
    def encoder(self) -> Encoder:
        return self.engine.encoder

    @property
    def info(self) -> ModelInfo:
        """Architecture, number of layers, hidden size and max length of the loaded model."""
        return self.engine.info

    def settings(self, config: ExtractConfig) -> dict:
        """The resolved settings recorded in the provenance."""
        return self.engine.settings(config)

    def identity(self, config: ExtractConfig) -> dict:
        """What must match for an interrupted store to be resumed (see `Engine.identity`)."""
        return self.engine.identity(config)

    def batch_tokens(self, config: ExtractConfig) -> int:
        """Padded tokens per batch for this config and device (see `Engine.batch_tokens`)."""
        return self.engine.batch_tokens(config)

    def output_shape(
        self, config: ExtractConfig, selection: LayerSelection | None = None
    ) -> tuple[int, int]:
        """The `(K, H)` of one output row (a text, token or word) for this config."""
        return self.engine.plan(config).row_shape

    def iter_chunks(
        self,
        records: Iterable[Record],
        config: ExtractConfig,
        progress: Progress | None = None,
        reserve: Reserve | None = None,
    ) -> Iterator:
        """Embed records chunk by chunk (see `Engine.iter_chunks`)."""
        return self.engine.iter_chunks(records, config, progress, reserve)

    def run(
        self,
        records: Iterable[Record],
        sink: Sink,
        config: ExtractConfig | None = None,
        progress: bool = False,
        total: int | None = None,
    ) -> dict:
        """Stream records through the model into `sink`; returns the provenance written
        (see `stream`)."""
        return stream(self.engine, records, sink, config, progress, total)

    def _collect(
        self, records: list[Record], config: ExtractConfig, progress: bool
    ) -> tuple[MemorySink, dict]:
        sink = MemorySink()
        provenance = self.run(records, sink, config, progress=progress)
        return sink, provenance

    def extract(
        self,
        texts: Sequence[str] | Iterable[Record],
        pairs: Sequence[str] | None = None,
        config: ExtractConfig | None = None,
        progress: bool = False,
        **options: object,
    ) -> SentenceEmbeddings:
        """Embed texts (or records) to one vector per text and layer, in memory.

        Options are `ExtractConfig` fields (`layers`, `pooling`, `combine`, `long`, ...).
        """
        config = _config(config, options, Level.SENTENCE)
        records = as_records(texts, pairs)
        if not records:
            plan = self.engine.plan(config)
            empty = np.zeros((0, *plan.row_shape), config.output_dtype.value)
            return SentenceEmbeddings(
                ArraySource(empty),
                [],
                list(plan.layers),
                np.zeros(0, np.int64),
                np.zeros(0, bool),
                {"layers": list(plan.layers), "level": "sentence"},
            )
        sink, provenance = self._collect(records, config, progress)
        return make_result(sink.vectors(), sink.index.arrays(), provenance)

    def _extract_ragged(self, records: list[Record], config: ExtractConfig, progress: bool):
        if not records:
            raise InputError("no texts to embed")
        sink, provenance = self._collect(records, config, progress)
        return make_result(sink.vectors(), sink.index.arrays(), provenance)

    def extract_tokens(
        self,
        texts: Sequence[str] | Iterable[Record],
        config: ExtractConfig | None = None,
        progress: bool = False,
        **options: object,
    ) -> RaggedEmbeddings:
        """Embed every token (word piece) of every text, every selected layer: `(T_i, K, H)`.

        Special tokens are left out unless `include_special=True`; texts of any length are
        split into windows unless `long` says otherwise.
        """
        config = _config(config, options, Level.TOKEN)
        return self._extract_ragged(as_records(texts, None), config, progress)

    def extract_words(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]] | Iterable[Record],
        config: ExtractConfig | None = None,
        progress: bool = False,
        **options: object,
    ) -> RaggedEmbeddings:
        """Embed every word: raw texts (words = the tokenizer's pre-tokenization) or pre-split
        words (a list of words per text); `word_pooling` pools each word's subwords."""
        config = _config(config, options, Level.WORD)
        items = list(texts)
        if items and all(isinstance(t, list | tuple) for t in items):
            records = list(records_from_words(items))
        else:
            records = as_records(items, None)
        return self._extract_ragged(records, config, progress)

    def embed(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        **options: object,
    ) -> np.ndarray:
        """Embed texts in memory: a numpy array `(N, K, H)` in input order.

        Options are `ExtractConfig` fields, e.g. `layers="all"`, `pooling="mean"`,
        `combine="stack"`. Use `extract` for ids, token counts and provenance too.
        """
        config = _config(None, options, Level.SENTENCE)
        records = as_records(texts, pairs)
        if not records:
            return self.extract([], config=config).embeddings
        embedded = self.engine.embed(records, config)
        truncated = [r.id for r in embedded if r.truncated]
        log = PerTextLog()
        log.add_earlier(len(embedded), len(truncated), truncated[: PerTextLog.FIRST])
        warn_truncated(log, self.engine.plan(config).max_length)
        return np.stack([r.vectors for r in embedded])

    def attentions(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]] | Iterable[Record],
        pairs: Sequence[str] | None = None,
        layers: LayerSpec = "all",
        heads: LayerSpec = "all",
        level: str = "token",
        **options: object,
    ) -> list[AttentionMaps]:
        """Attention maps per text: `maps` float32 `(K, A, T, T)` (selected layers 1..L, heads,
        tokens with [CLS]/[SEP]) with `items`, `spans`, `layers`, `heads`, equal to
        transformers' eager `output_attentions` for the text run alone.

        `level="word"` merges pieces as Clark et al. (2019). Other options are
        `AttentionConfig` fields: `long` (`error`, or `truncate`), `max_tokens`, `norms`
        (Kobayashi et al.'s ‖α f(x)‖ instead of the weights)."""
        config = AttentionConfig.from_dict(
            {"layers": layers, "heads": heads, "level": level, **options}
        )
        return self.engine.attentions(_attention_records(texts, pairs), config)


def _attention_records(texts: object, pairs: Sequence[str] | None) -> list[Record]:
    """Records from texts (with pairs), pre-split words (a list of words per text), or records."""
    items = list(texts) if not isinstance(texts, str) else texts
    if isinstance(items, list) and items and all(isinstance(t, list | tuple) for t in items):
        if pairs is not None:
            raise OptionError("pre-split words come without pairs: give texts with their pairs")
        return list(records_from_words(items))
    return as_records(items, pairs)


def _config(config: ExtractConfig | None, options: dict, level: Level) -> ExtractConfig:
    if config is not None and options:
        raise OptionError("pass either config or keyword options, not both")
    if config is None:
        if "level" in options:
            raise OptionError(
                "the level is set by the method: extract, extract_tokens, extract_words"
            )
        return ExtractConfig.from_options(level=level, **options)
    if config.level is not level:
        raise OptionError(
            f"config.level is {config.level.value}, but this method embeds {level.value}s"
        )
    return config
