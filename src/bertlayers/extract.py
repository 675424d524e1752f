"""The extraction loop: records -> tokens/batches -> forward -> layers -> pooling -> sink.

This is the one core that the Python API, the CLI (and later the service and the Ray runner)
call. It works on chunks of records (a sort window) so memory stays bounded for any corpus.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from itertools import islice

import numpy as np
import torch

from .batching import collate, plan_batches, tokenize
from .encoder import Encoder, ModelInfo
from .errors import BertlayersError, OptionError, TruncationWarning
from .layers import LayerSelection, LayerSpec, combine_layers, resolve_layers
from .options import Combine, DType, Pooling
from .pooling import pool, pooling_mask
from .provenance import PerTextLog, build_provenance
from .readers import Record, records_from_texts
from .sinks import MemorySink, SentenceChunk, Sink


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides what is extracted, and how work is batched.

    Batching settings (`batch_tokens`, `max_batch_size`, `max_padding`, `chunk_size`) change
    speed and memory only, never the result.
    """

    layers: LayerSpec = "all"
    pooling: Pooling | str = Pooling.MEAN
    combine: Combine | str = Combine.STACK
    include_special: bool = False
    max_length: int | None = None  # tokens per sequence; None = the model's limit
    output_dtype: DType | str = DType.FLOAT32
    batch_tokens: int = 8192  # padded tokens per batch
    max_batch_size: int = 256  # texts per batch
    max_padding: float = 0.25  # largest share of padding in a batch
    chunk_size: int = 4096  # texts read, sorted and batched together (the sort window)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "pooling", Pooling.parse(self.pooling, "pooling"))
        set_(self, "combine", Combine.parse(self.combine, "combine"))
        set_(self, "output_dtype", DType.parse(self.output_dtype, "output dtype"))
        if self.output_dtype is DType.BFLOAT16:
            raise OptionError("output dtype bfloat16 has no numpy type: use float32 or float16")
        for name in ("batch_tokens", "max_batch_size", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise OptionError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_padding <= 1:
            raise OptionError(f"max_padding must be between 0 and 1, got {self.max_padding}")
        if self.max_length is not None and self.max_length < 4:
            raise OptionError(f"max_length must be at least 4 tokens, got {self.max_length}")

    @classmethod
    def from_options(cls, **options: object) -> ExtractConfig:
        """Build a config from keyword options, naming any option that does not exist."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            valid = ", ".join(sorted(known))
            raise OptionError(f"unknown option(s) {', '.join(unknown)}; valid options are: {valid}")
        return cls(**options)  # type: ignore[arg-type]


@dataclass
class SentenceEmbeddings:
    """Pooled embeddings of N texts, in input order.

    `embeddings` is `(N, K, H)`: texts x selected layers x hidden size, or `(N, 1, H)` when the
    layers are combined by mean/sum and `(N, 1, K*H)` when concatenated.
    """

    embeddings: np.ndarray
    ids: list[str]
    layers: list[int]
    n_tokens: np.ndarray  # (N,) tokens before truncation, special tokens included
    truncated: np.ndarray  # (N,) bool
    provenance: dict = field(repr=False)

    def layer(self, index: int) -> np.ndarray:
        """The `(N, H)` vectors of one layer (our index convention; it must have been selected)."""
        if self.provenance.get("combine") != Combine.STACK.value:
            raise OptionError("layers were combined: there is no single layer to take")
        num_layers = self.provenance["model"]["num_layers"]
        wanted = resolve_layers(index, num_layers).indices[0]
        if wanted not in self.layers:
            raise OptionError(f"layer {index} was not extracted; layers here: {self.layers}")
        return self.embeddings[:, self.layers.index(wanted)]


def _chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _Progress:
    """A tqdm bar on stderr showing texts/s and tokens/s; does nothing when disabled."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.bar = None
        self.tokens = 0
        self.start = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, unit="text", file=sys.stderr, dynamic_ncols=True, smoothing=0.1
            )

    def update(self, texts: int, tokens: int) -> None:
        if self.bar is None:
            return
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
        self.bar.update(texts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Extractor:
    """Per-layer embeddings from one encoder: load once, embed many times.

    `model` is a hub id, a local directory, or None for `BERTLAYERS_MODEL` / the bundled
    all-MiniLM-L6-v2. `dtype` is the compute dtype; outputs are float32 unless asked otherwise.
    """

    def __init__(
        self,
        model: str | None = None,
        device: str | None = "auto",
        dtype: DType | str = DType.FLOAT32,
        revision: str | None = None,
    ) -> None:
        self.encoder = Encoder(model, device=device, dtype=dtype, revision=revision)

    @property
    def info(self) -> ModelInfo:
        """Architecture, number of layers, hidden size and max length of the loaded model."""
        return self.encoder.info

    def _max_length(self, config: ExtractConfig) -> int:
        limit = self.info.max_length
        if config.max_length is None:
            return limit
        if config.max_length > limit:
            raise OptionError(
                f"max_length {config.max_length} exceeds this model's limit of {limit} tokens"
            )
        return config.max_length

    def output_shape(self, config: ExtractConfig, selection: LayerSelection) -> tuple[int, int]:
        """The `(K, H)` of one text's output for this config."""
        k, h = len(selection.indices), self.info.hidden_size
        if config.combine is Combine.STACK:
            return k, h
        return 1, h * k if config.combine is Combine.CONCAT else h

    def _pool_batch(
        self, batch: dict[str, torch.Tensor], selection: LayerSelection, config: ExtractConfig
    ) -> np.ndarray:
        hidden = self.encoder.hidden_states(batch, selection.indices)  # (K, B, T, H)
        hidden = combine_layers(hidden.float(), config.combine)  # (K', B, T, H')
        device = hidden.device
        mask = pooling_mask(
            batch["attention_mask"].to(device),
            batch["special_tokens_mask"].to(device),
            config.include_special,
        )
        pooled = pool(hidden, mask, config.pooling)  # (K', B, H')
        pooled = pooled.transpose(0, 1).to(config.output_dtype.torch)  # (B, K', H')
        return pooled.cpu().numpy()

    def iter_chunks(
        self,
        records: Iterable[Record],
        config: ExtractConfig,
        progress: _Progress | None = None,
    ) -> Iterator[SentenceChunk]:
        """Embed records chunk by chunk; each chunk comes back whole and in input order."""
        selection = resolve_layers(config.layers, self.info.num_layers)
        max_length = self._max_length(config)
        row_shape = self.output_shape(config, selection)
        np_dtype = np.dtype(config.output_dtype.value)
        for records_chunk in _chunked(records, config.chunk_size):
            try:
                encoded = tokenize(
                    self.encoder.tokenizer,
                    records_chunk,
                    max_length,
                    self.encoder.uses_token_types,
                )
            except BertlayersError:
                raise
            except Exception as err:  # tokenizer errors carry no record: name the chunk
                first, last = records_chunk[0].id, records_chunk[-1].id
                raise BertlayersError(f"cannot tokenize records {first}..{last}: {err}") from None
            lengths = encoded.lengths
            out = np.empty((len(records_chunk), *row_shape), dtype=np_dtype)
            for rows in plan_batches(
                lengths, config.batch_tokens, config.max_batch_size, config.max_padding
            ):
                batch = collate(encoded, rows, self.encoder.pad_id)
                out[rows] = self._pool_batch(batch, selection, config)
                if progress is not None:
                    progress.update(len(rows), int(lengths[rows].sum()))
            yield SentenceChunk(
                ids=[r.id for r in records_chunk],
                embeddings=out,
                n_tokens=encoded.full_lengths,
                truncated=encoded.truncated,
            )

    def run(
        self,
        records: Iterable[Record],
        sink: Sink,
        config: ExtractConfig | None = None,
        progress: bool = False,
        total: int | None = None,
    ) -> dict:
        """Stream records through the model into `sink`; returns the provenance written.

        On any failure (bad record, Ctrl-C) the sink is aborted with what it already has.
        Texts over the length limit are truncated and reported with a `TruncationWarning`.
        """
        config = config or ExtractConfig()
        selection = resolve_layers(config.layers, self.info.num_layers)
        max_length = self._max_length(config)
        row_shape = self.output_shape(config, selection)
        log = PerTextLog()
        bar = _Progress(progress, total if total is not None else _len_or_none(records))

        def provenance(complete: bool, error: str | None = None) -> dict:
            shape = (len(log.ids), *row_shape)
            return build_provenance(
                self.encoder, config, selection, max_length, shape, log, complete, error
            )

        try:
            for chunk in self.iter_chunks(records, config, bar):
                sink.write(chunk)
                log.add(chunk)
        except BaseException as err:
            bar.close()
            sink.abort(provenance(False, str(err) or type(err).__name__))
            raise
        bar.close()
        record = provenance(True)
        _warn_truncation(log, max_length)
        sink.close(record)
        return record

    def extract(
        self,
        texts: Sequence[str] | Iterable[Record],
        pairs: Sequence[str] | None = None,
        config: ExtractConfig | None = None,
        progress: bool = False,
        **options: object,
    ) -> SentenceEmbeddings:
        """Embed texts (or records) in memory; options are `ExtractConfig` fields."""
        if config is None:
            config = ExtractConfig.from_options(**options)
        elif options:
            raise OptionError("pass either config or keyword options, not both")
        if isinstance(texts, str):
            raise OptionError("texts must be a list of strings, not one string")
        items = list(texts)
        if items and all(isinstance(r, Record) for r in items):
            records: list[Record] = items
        else:
            records = list(records_from_texts(items, pairs))
        sink = MemorySink()
        if not records:
            selection = resolve_layers(config.layers, self.info.num_layers)
            empty = np.zeros((0, *self.output_shape(config, selection)), config.output_dtype.value)
            return SentenceEmbeddings(
                empty, [], list(selection.indices), np.zeros(0, np.int32), np.zeros(0, bool), {}
            )
        provenance = self.run(records, sink, config, progress=progress)
        texts_meta = provenance["texts"]
        return SentenceEmbeddings(
            embeddings=sink.array(),
            ids=texts_meta["ids"],
            layers=provenance["layers"],
            n_tokens=np.asarray(texts_meta["n_tokens"], dtype=np.int32),
            truncated=np.asarray(texts_meta["truncated"], dtype=bool),
            provenance=provenance,
        )

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
        return self.extract(texts, pairs, **options).embeddings


def _len_or_none(items: object) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _warn_truncation(log: PerTextLog, max_length: int) -> None:
    truncated = log.truncated
    count = int(truncated.sum())
    if not count:
        return
    first = [log.ids[i] for i in np.flatnonzero(truncated)[:5]]
    more = ", ..." if count > len(first) else ""
    warnings.warn(
        TruncationWarning(
            f"{count} of {len(truncated)} texts were longer than {max_length} tokens and were "
            f"truncated (ids: {', '.join(first)}{more}); their 'truncated' flag is set in the "
            "provenance"
        ),
        stacklevel=3,
    )
