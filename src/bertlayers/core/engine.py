"""The `Engine`: one loaded model that embeds records for a config, in length-sorted batches.

records -> tokenize (windows where too long) -> batches under a token budget -> forward, stopping
at the deepest layer asked for -> select and combine layers -> pool -> per-record vectors.

Two routes through it:
- sentence level with truncation: the tokenizer builds each sequence (pairs too) and pooling
  runs on the device, batch by batch;
- token and word level, and any level with `long="split"`: texts are tokenized without special
  tokens, cut into windows where too long, and each record's token vectors are stitched from
  its windows before they are pooled to words or to one sentence vector.

`Engine.embed` takes a list of records and returns one `RecordVectors` per record: no chunks,
no sink, no provenance, so a service can batch many requests' records into one call.
`iter_chunks` is what the streaming run (`stream.py`) drives chunk by chunk into a sink.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from itertools import islice

import numpy as np
import torch

from ..backends import resolve_runtime
from ..chunks import RaggedChunk, SentenceChunk
from ..errors import BertlayersError, InputError, OptionError
from ..io.readers import Record
from ..layers import LayerSelection, resolve_layers
from ..options import Backend, Combine, DType, Level, LongMode, Runtime
from ..sinks import ArrayRows, Reserve, RowTarget
from .batching import (
    ContentTokens,
    Windows,
    build_windows,
    collate,
    plan_batches,
    tokenize,
    tokenize_content,
)
from .config import ExtractConfig
from .encoder import Encoder, ModelInfo
from .pipeline import SentencePipeline, sentence_pipeline_of
from .pooling import combine_layers, pool, pool_stitched, pooling_mask, word_pooling


@dataclass
class RecordVectors:
    """One record embedded by `Engine.embed`.

    `vectors` is `(K, H)` at sentence level (`(1, H)` or `(1, K*H)` when layers are
    combined), `(T, K, H)` at token and word level with the token or word strings in `items`
    and their `(start, end)` character spans in `spans`."""

    id: str
    vectors: np.ndarray
    n_tokens: int  # tokens of the whole text, special tokens included, before truncation
    truncated: bool
    windows: int  # windows the text ran in (1 unless split)
    items: list[str] | None = None
    spans: np.ndarray | None = None  # (T, 2)


@contextlib.contextmanager
def _naming_chunk(records: list[Record]) -> Iterator[None]:
    """Tokenizer errors carry no record: re-raise them naming the chunk's records."""
    try:
        yield
    except BertlayersError:
        raise
    except Exception as err:
        first, last = records[0].id, records[-1].id
        raise BertlayersError(f"cannot tokenize records {first}..{last}: {err}") from None


def _chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Progress:
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

    def close(self, failed: bool = False) -> None:
        """Close the bar; after a failure, erase it so the error stands alone."""
        if self.bar is not None:
            self.bar.leave = not failed
            self.bar.close()


class Engine:
    """One loaded model (encoder + tokenizer + backend) that embeds records for a config.

    `model` is a hub id, a local directory, or None for `BERTLAYERS_MODEL` / the bundled
    all-MiniLM-L6-v2. `dtype` is the compute dtype; outputs are float32 unless asked otherwise.
    `runtime` is what runs the forward pass: `torch`, `compile`, `int8` or `openvino` (see
    `bertlayers.backends`; `int8=`, `torch_compile=`, `backend=` are its deprecated spellings).

    `embed` is thread-safe: calls from several threads run one at a time (a service's worker
    batches many requests' records into one call instead).
    """

    def __init__(
        self,
        model: str | None = None,
        device: str | None = "auto",
        dtype: DType | str = DType.FLOAT32,
        revision: str | None = None,
        runtime: Runtime | str | None = None,
        *,
        int8: bool = False,
        torch_compile: bool = False,
        backend: Backend | str | None = None,
    ) -> None:
        chosen = resolve_runtime(runtime, int8, torch_compile, backend, stacklevel=2)
        self.encoder = Encoder(model, device=device, dtype=dtype, revision=revision, runtime=chosen)
        self._lock = threading.Lock()  # one embed call at a time
        # the fast tokenizer keeps its truncation settings between calls: one user at a time
        self._tokenizing = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        return self.encoder.runtime

    @property
    def fingerprint(self) -> str:
        """Hub commit hash, or sha256 of a local model's weights: what identifies the model."""
        return self.encoder.fingerprint

    def sentence_pipeline(self) -> SentencePipeline:
        """The model's own sentence-transformers pipeline (pooling, max length, normalize)."""
        return sentence_pipeline_of(self.info.model_id, self.encoder._path, self.info.revision)

    @property
    def info(self) -> ModelInfo:
        """Architecture, number of layers, hidden size and max length of the loaded model."""
        return self.encoder.info

    def token_counts(self, records: Sequence[Record]) -> np.ndarray:
        """Tokens of each record, special tokens included, before truncation: `(N,)`.

        Cheap next to a forward pass; a service uses it to bound its queue in tokens."""
        if not records:
            return np.zeros(0, dtype=np.int64)
        texts = [r.text for r in records]
        pairs = [r.pair or "" for r in records] if any(r.pair for r in records) else None
        with _naming_chunk(list(records)), self._tokenizing:
            encoded = self.encoder.tokenizer(
                texts, pairs, add_special_tokens=True, truncation=False, verbose=False
            )["input_ids"]
        return np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(texts))

    def release_cached_memory(self) -> None:
        """Hand the device's cached blocks back (after an out-of-memory failure, before a
        retry); nothing to do on a CPU."""
        if self.encoder.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ settings

    def _max_length(self, config: ExtractConfig) -> int:
        limit = self.info.max_length
        if config.max_length is None:
            return limit
        if config.max_length > limit:
            raise OptionError(
                f"max_length {config.max_length} exceeds this model's limit of {limit} tokens"
            )
        return config.max_length

    def _window(self, config: ExtractConfig) -> tuple[int, int]:
        """Content tokens per window, and the stride (tokens shared by neighbouring windows)."""
        prefix, suffix = self.encoder.special_template
        width = self._max_length(config) - len(prefix) - len(suffix)
        stride = width // 4 if config.stride is None else config.stride
        if stride >= width:
            raise OptionError(
                f"stride {stride} must be below the {width} content tokens of a window"
            )
        return width, stride

    def _windows(self, content: ContentTokens, config: ExtractConfig) -> Windows:
        """Model inputs for tokenized records: windows when splitting, else one (truncated)."""
        prefix, suffix = self.encoder.special_template
        width, stride = self._window(config)
        return build_windows(
            content,
            prefix,
            suffix,
            width,
            stride,
            split=config.long is LongMode.SPLIT,
            use_token_types=self.encoder.uses_token_types,
        )

    def batch_tokens(self, config: ExtractConfig) -> int:
        """Padded tokens per batch: as configured, else what measured fastest for the device.

        On CPUs small batches of similar length win (`bench/`: 1024 tokens ran 25-30% faster
        than 8192 on 2 cores, for MiniLM and bert-base); GPUs want large batches.
        """
        if config.batch_tokens is not None:
            return config.batch_tokens
        return 1024 if self.encoder.device.type == "cpu" else 16384

    def output_shape(self, config: ExtractConfig, selection: LayerSelection) -> tuple[int, int]:
        """The `(K, H)` of one output row (a text, token or word) for this config."""
        k, h = len(selection.indices), self.info.hidden_size
        if config.combine is Combine.STACK:
            return k, h
        return 1, h * k if config.combine is Combine.CONCAT else h

    def settings(self, config: ExtractConfig) -> dict:
        """The resolved settings recorded in the provenance."""
        selection = resolve_layers(config.layers, self.info.num_layers)
        record = {
            "level": config.level.value,
            "layers": list(selection.indices),
            "combine": config.combine.value,
            "include_special": config.include_special,
            "max_length": self._max_length(config),
            "long": config.long.value,
            "output_dtype": config.output_dtype.value,
        }
        if config.level is Level.SENTENCE:
            record["pooling"] = config.pooling.value
        if config.level is Level.WORD:
            record["word_pooling"] = config.word_pooling.value
        if config.long is LongMode.SPLIT:
            width, stride = self._window(config)
            record["window"] = width
            record["stride"] = stride
        return record

    def identity(self, config: ExtractConfig) -> dict:
        """What must match for an interrupted store to be resumed: the model, the settings,
        and the batching (which decides the bytes of every row)."""
        return {
            "model": self.info.model_id,
            "fingerprint": self.encoder.fingerprint,
            "compute_dtype": self.encoder.compute,
            "compiled": self.encoder.compiled,
            **({"backend": "openvino"} if self.encoder.runtime is Runtime.OPENVINO else {}),
            "device": str(self.encoder.device),
            **self.settings(config),
            "batch_tokens": self.batch_tokens(config),
            "max_batch_size": config.max_batch_size,
            "max_padding": config.max_padding,
            "chunk_size": config.chunk_size,
            "chunk_bytes": config.chunk_bytes,
        }

    # ------------------------------------------------------------------ sentence route

    def _hidden(self, batch: dict[str, torch.Tensor], selection: LayerSelection, config):
        hidden = self.encoder.hidden_states(batch, selection.indices)  # (K, B, T, H)
        return combine_layers(hidden.float(), config.combine)  # (K', B, T, H')

    def _pool_batch(
        self, batch: dict[str, torch.Tensor], selection: LayerSelection, config: ExtractConfig
    ) -> torch.Tensor:
        """Pool one batch on the device: `(K', B, H')`.

        Kept layers are pooled one by one, straight from the model's outputs (no `(K, B, T, H)`
        stack); combined layers are combined per token first, then pooled.
        """
        mask = pooling_mask(
            self.encoder.to_device(batch["attention_mask"]),
            self.encoder.to_device(batch["special_tokens_mask"]),
            config.include_special,
        )
        if config.combine is Combine.STACK:
            states = self.encoder.hidden_state_list(batch, selection.indices)
            return torch.stack([pool(s.float(), mask, config.pooling) for s in states])
        hidden = self._hidden(batch, selection, config)
        return pool(hidden, mask, config.pooling)

    def _pooled_chunks(
        self, records: Iterable[Record], config: ExtractConfig, progress: Progress
    ) -> Iterator[SentenceChunk]:
        selection = resolve_layers(config.layers, self.info.num_layers)
        max_length = self._max_length(config)
        row_shape = self.output_shape(config, selection)
        for records_chunk in _chunked(records, config.chunk_size):
            with _naming_chunk(records_chunk), self._tokenizing:
                encoded = tokenize(
                    self.encoder.tokenizer, records_chunk, max_length, self.encoder.uses_token_types
                )
            if config.long is LongMode.ERROR and encoded.truncated.any():
                i = int(np.flatnonzero(encoded.truncated)[0])
                raise InputError(
                    _too_long(records_chunk[i].id, encoded.full_lengths[i], max_length)
                )
            lengths = encoded.lengths
            out = np.empty((len(records_chunk), *row_shape), dtype=config.output_dtype.value)
            for rows in plan_batches(
                lengths, self.batch_tokens(config), config.max_batch_size, config.max_padding
            ):
                batch = collate(encoded, rows, self.encoder.pad_id)
                pooled = self._pool_batch(batch, selection, config)  # (K', B, H')
                pooled = pooled.transpose(0, 1).to(config.output_dtype.torch)  # (B, K', H')
                out[rows] = pooled.cpu().numpy()
                progress.update(len(rows), int(lengths[rows].sum()))
            yield SentenceChunk(
                ids=[r.id for r in records_chunk],
                vectors=out,
                n_tokens=encoded.full_lengths,
                truncated=encoded.truncated,
                windows=np.ones(len(records_chunk), dtype=np.int64),
            )

    # ------------------------------------------------------------------ token route

    def _groups(self, content: ContentTokens, row_bytes: int, budget: int) -> Iterator[list[int]]:
        """Consecutive records whose stitched output stays under `budget` bytes (one at least)."""
        group: list[int] = []
        size = 0
        for i, ids in enumerate(content.ids):
            cost = (len(ids) + 2) * row_bytes
            if group and size + cost > budget:
                yield group
                group, size = [], 0
            group.append(i)
            size += cost
        if group:
            yield group

    def _layer_states(
        self, batch: dict[str, torch.Tensor], selection: LayerSelection, config: ExtractConfig
    ) -> list[torch.Tensor]:
        """One `(B, T, H')` tensor per output layer; kept layers are not stacked (no copy)."""
        if config.combine is Combine.STACK:
            return self.encoder.hidden_state_list(batch, selection.indices)
        return list(self._hidden(batch, selection, config).unbind(0))

    def _run_windows(
        self, windows: Windows, selection: LayerSelection, config: ExtractConfig, keep_cls: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Forward every window; per sequence the kept vectors `(n_keep, K', H')` (and CLS)."""
        encoded = windows.encoded
        pieces: list[np.ndarray] = [None] * len(encoded.input_ids)  # type: ignore[list-item]
        cls: list[np.ndarray] | None = [None] * len(pieces) if keep_cls else None  # type: ignore[list-item]
        for rows in plan_batches(
            encoded.lengths, self.batch_tokens(config), config.max_batch_size, config.max_padding
        ):
            batch = collate(encoded, rows, self.encoder.pad_id)
            hidden = self._hidden(batch, selection, config)  # (K', B, T, H')
            width = hidden.shape[2]
            keep = np.zeros((len(rows), width), dtype=bool)
            for b, s in enumerate(rows):
                keep[b, : len(windows.keep[s])] = windows.keep[s]
            kept = hidden[:, torch.from_numpy(keep).to(hidden.device)]  # (K', n_keep, H')
            kept = kept.transpose(0, 1).cpu().numpy()  # (n_keep, K', H')
            for b, part in enumerate(np.split(kept, np.cumsum(keep.sum(1))[:-1])):
                pieces[rows[b]] = part
            if cls is not None:
                first = hidden[:, :, 0].transpose(0, 1).cpu().numpy()  # (B, K', H')
                for b, s in enumerate(rows):
                    cls[s] = first[b]
        return pieces, cls

    def _run_windows_into(
        self,
        windows: Windows,
        plan: np.ndarray,
        target: RowTarget,
        selection: LayerSelection,
        config: ExtractConfig,
        progress: Progress,
    ) -> None:
        """Token level: forward every window and put its rows in their place in `target`.

        `plan[s]` is `(src_lo, src_hi, dst_lo)` of sequence s. Batches run in length order
        over the whole chunk; rows go to the target as each batch finishes (no per-window
        pieces, no stitching), converted to the output dtype on the device.
        """
        encoded = windows.encoded
        dtype = config.output_dtype.torch
        last = np.r_[windows.record_of[1:] != windows.record_of[:-1], True]
        for rows in plan_batches(
            encoded.lengths, self.batch_tokens(config), config.max_batch_size, config.max_padding
        ):
            batch = collate(encoded, rows, self.encoder.pad_id)
            states = self._layer_states(batch, selection, config)
            # (B, T, K', H'): each token's layers side by side, as its output row holds them
            stacked = torch.stack([h.to(dtype) for h in states], dim=2).cpu().numpy()
            del states
            for b, s in enumerate(rows):
                src_lo, src_hi, dst = plan[s]
                if src_hi > src_lo:
                    target.put(int(dst), stacked[b, src_lo:src_hi])
            progress.update(int(last[rows].sum()), int(encoded.lengths[rows].sum()))

    def _token_chunks(
        self,
        records: Iterable[Record],
        config: ExtractConfig,
        progress: Progress,
        reserve: Reserve,
    ) -> Iterator[SentenceChunk]:
        """Token level: each chunk of records is batched as a whole (like pooled output), and
        its rows go straight to room the sink reserves, so nothing is held but one batch."""
        selection = resolve_layers(config.layers, self.info.num_layers)
        row_shape = self.output_shape(config, selection)
        prefix, suffix = self.encoder.special_template
        for records_chunk in _chunked(records, config.chunk_size):
            content, full = self._content(records_chunk, config)
            windows = self._windows(content, config)
            plan, n_rows = _token_plan(windows, len(prefix), len(suffix), config.include_special)
            target = reserve(n_rows, row_shape, np.dtype(config.output_dtype.value))
            self._run_windows_into(windows, plan, target, selection, config, progress)
            yield self._assemble_tokens(
                records_chunk, content, windows, target.vectors, full, config.include_special
            )

    def _content(
        self, records: list[Record], config: ExtractConfig
    ) -> tuple[ContentTokens, np.ndarray]:
        """Tokenize a chunk for the windowed routes (no pairs); the full token count of each."""
        for record in records:
            if record.pair is not None:
                raise OptionError(
                    f"record {record.id}: sentence pairs are embedded at sentence level "
                    "with long texts truncated (level='sentence', long='truncate')"
                )
        with _naming_chunk(records), self._tokenizing:
            content = tokenize_content(
                self.encoder.tokenizer, self.encoder.words_tokenizer, records
            )
        n_special = sum(len(x) for x in self.encoder.special_template)
        full = np.fromiter((len(x) + n_special for x in content.ids), dtype=np.int64)
        max_length = self._max_length(config)
        if config.long is LongMode.ERROR and (full > max_length).any():
            i = int(np.flatnonzero(full > max_length)[0])
            raise InputError(_too_long(records[i].id, full[i], max_length))
        return content, full

    def _ragged_chunks(
        self, records: Iterable[Record], config: ExtractConfig, progress: Progress
    ) -> Iterator[SentenceChunk]:
        """Word level, and split sentence level: windows are stitched per record and pooled,
        in groups of records whose output stays under `chunk_bytes`."""
        selection = resolve_layers(config.layers, self.info.num_layers)
        row_shape = self.output_shape(config, selection)
        row_bytes = int(np.prod(row_shape)) * 4  # word and sentence pooling work in float32
        for records_chunk in _chunked(records, config.chunk_size):
            content, full = self._content(records_chunk, config)
            groups = list(self._groups(content, row_bytes, config.chunk_bytes))
            for number, group in enumerate(groups):
                sub = ContentTokens(
                    *([getattr(content, f.name)[i] for i in group] for f in fields(ContentTokens))
                )
                windows = self._windows(sub, config)
                pieces, cls = self._run_windows(
                    windows, selection, config, keep_cls=config.level is Level.SENTENCE
                )
                chunk = self._assemble(
                    [records_chunk[i] for i in group],
                    sub,
                    windows,
                    pieces,
                    cls,
                    full[group],
                    config,
                    row_shape,
                )
                chunk.chunk_end = number == len(groups) - 1
                yield chunk
                progress.update(len(group), int(windows.encoded.lengths.sum()))

    def _assemble_tokens(
        self,
        records: list[Record],
        content: ContentTokens,
        windows: Windows,
        flat: np.ndarray,
        full: np.ndarray,
        keep_special: bool,
    ) -> RaggedChunk:
        """Token level: the rows are in `flat` already; add each record's tokens and spans."""
        prefix, suffix = self.encoder.special_template
        items: list[str] = []
        spans, lengths = [], []
        for r in range(len(records)):
            covered = int(windows.covered[r])
            ids = content.ids[r][:covered].tolist()
            token_spans = content.spans[r][:covered]
            if keep_special:
                ids = prefix + ids + suffix
                edge = np.zeros((len(prefix), 2), np.int64), np.zeros((len(suffix), 2), np.int64)
                token_spans = np.concatenate([edge[0], token_spans, edge[1]])
            with self._tokenizing:
                items.extend(self.encoder.tokenizer.convert_ids_to_tokens(ids))
            spans.append(token_spans)
            lengths.append(len(ids))
        return RaggedChunk(
            vectors=flat,
            lengths=np.asarray(lengths, dtype=np.int64),
            items=items,
            spans=np.concatenate(spans) if spans else np.zeros((0, 2), np.int64),
            replaced=[],
            ids=[r.id for r in records],
            n_tokens=full,
            truncated=_truncated(windows, content),
            windows=windows.windows.copy(),
        )

    def _assemble(
        self,
        records: list[Record],
        content: ContentTokens,
        windows: Windows,
        pieces: list[np.ndarray],
        cls: list[np.ndarray] | None,
        full: np.ndarray,
        config: ExtractConfig,
        row_shape: tuple[int, int],
    ) -> SentenceChunk:
        """Word and sentence level: stitch each record's windows, then pool them."""
        p = len(self.encoder.special_template[0])
        out_dtype = np.dtype(config.output_dtype.value)
        starts = np.searchsorted(windows.record_of, np.arange(len(records) + 1))
        vectors, lengths, items, spans, replaced = [], [], [], [], []
        for r, record in enumerate(records):
            seqs = range(starts[r], starts[r + 1])
            covered = int(windows.covered[r])
            stitched = np.concatenate([pieces[s] for s in seqs])  # (p + covered + q, K', H')
            body = stitched[p : p + covered]
            if config.level is Level.WORD:
                word_ids = content.word_ids[r][:covered]
                n_words = int(word_ids[-1]) + 1 if covered else 0
                words = word_pooling(body, word_ids, n_words, config.word_pooling.value)
                vectors.append(words.astype(out_dtype))
                word_spans = content.word_spans[r][:n_words]
                if record.words is not None:
                    items.extend(record.words[:n_words])
                else:
                    items.extend(record.text[a:b] for a, b in word_spans)
                spans.append(word_spans)
                lengths.append(n_words)
                replaced.extend((record.id, w) for w in content.replaced[r] if w < n_words)
            else:
                pool_rows = stitched if config.include_special or covered == 0 else body
                vectors.append(
                    pool_stitched(pool_rows, np.stack([cls[s] for s in seqs]), config.pooling)
                )
        common = dict(
            ids=[r.id for r in records],
            n_tokens=full,
            truncated=_truncated(windows, content),
            windows=np.diff(starts),
        )
        if config.level is Level.SENTENCE:
            return SentenceChunk(vectors=np.stack(vectors).astype(out_dtype), **common)
        flat = np.concatenate(vectors) if vectors else np.zeros((0, *row_shape), out_dtype)
        return RaggedChunk(
            vectors=flat,
            lengths=np.asarray(lengths, dtype=np.int64),
            items=items,
            spans=np.concatenate(spans) if spans else np.zeros((0, 2), np.int64),
            replaced=replaced,
            **common,
        )

    # ------------------------------------------------------------------ running

    def embed(self, records: Sequence[Record], config: ExtractConfig) -> list[RecordVectors]:
        """Embed records in memory, one `RecordVectors` each, in input order.

        All the records are sorted and batched together (no chunks), and nothing else is
        built: no sink, no provenance. The results are those of `iter_chunks`, row for row.
        """
        with self._lock:
            return self._embed_unlocked(list(records), config)

    def _embed_unlocked(self, records: list[Record], config: ExtractConfig) -> list[RecordVectors]:
        if not records:
            return []
        whole = replace(config, chunk_size=len(records))
        out: list[RecordVectors] = []
        for chunk in self.iter_chunks(records, whole):
            out.extend(_split_chunk(chunk))
        return out

    def embed_many(
        self, jobs: Sequence[tuple[Sequence[Record], ExtractConfig]]
    ) -> list[list[RecordVectors] | BertlayersError]:
        """Embed several jobs (records, config), each with its own config, in shared batches.

        Jobs whose forward passes can be shared run together, the pass stopping at the deepest
        layer any of them asked for, and each job is pooled and combined its own way (see
        `core/shared.py`). Returns per job its `RecordVectors` in input order, equal to
        `embed(records, config)`, or the `BertlayersError` its input raised.
        """
        from .shared import embed_many

        with self._lock:
            return embed_many(self, jobs)

    def iter_chunks(
        self,
        records: Iterable[Record],
        config: ExtractConfig,
        progress: Progress | None = None,
        reserve: Reserve | None = None,
    ) -> Iterator[SentenceChunk]:
        """Embed records chunk by chunk; each chunk comes back whole and in input order.

        At token level a chunk's rows are written, as batches finish, into room made by
        `reserve` (a sink's, e.g. a store's file; by default an array in memory).
        """
        progress = progress or Progress(False, None)
        if config.level is Level.TOKEN:
            return self._token_chunks(records, config, progress, reserve or ArrayRows)
        if config.windowed:
            return self._ragged_chunks(records, config, progress)
        return self._pooled_chunks(records, config, progress)


def _split_chunk(chunk: SentenceChunk) -> Iterator[RecordVectors]:
    """A chunk's records, one by one (token and word rows are views of the chunk's array)."""
    ragged = isinstance(chunk, RaggedChunk)
    vectors = np.asarray(chunk.vectors)
    bounds = np.concatenate([[0], np.cumsum(chunk.lengths)]) if ragged else None
    for i, record_id in enumerate(chunk.ids):
        common = dict(
            id=record_id,
            n_tokens=int(chunk.n_tokens[i]),
            truncated=bool(chunk.truncated[i]),
            windows=int(chunk.windows[i]),
        )
        if not ragged:
            yield RecordVectors(vectors=vectors[i], **common)
            continue
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        yield RecordVectors(
            vectors=vectors[lo:hi], items=chunk.items[lo:hi], spans=chunk.spans[lo:hi], **common
        )


def _truncated(windows: Windows, content: ContentTokens) -> np.ndarray:
    """Records whose output covers fewer content tokens than they have."""
    return windows.covered < np.fromiter((len(x) for x in content.ids), dtype=np.int64)


def _token_plan(windows: Windows, p: int, q: int, keep_special: bool) -> tuple[np.ndarray, int]:
    """Where each window's rows go in a group's token-level output.

    A record's output is its windows' kept rows laid end to end (prefix specials, covered
    content, suffix specials), cut to the content unless special tokens are kept. Returns
    `(S, 3)` rows `(src_lo, src_hi, dst_lo)` (positions in the window, and the row of the
    output where the first goes) and the number of output rows.
    """
    plan = np.zeros((len(windows.keep), 3), dtype=np.int64)
    cursor = 0
    starts = np.searchsorted(windows.record_of, np.arange(len(windows.covered) + 1))
    for r, covered in enumerate(windows.covered.tolist()):
        lo, hi = (0, p + covered + q) if keep_special else (p, p + covered)
        stitched = 0  # position, in the record's stitched rows, of this window's first kept row
        for s in range(starts[r], starts[r + 1]):
            kept = np.flatnonzero(windows.keep[s])
            first, count = (int(kept[0]), len(kept)) if len(kept) else (0, 0)
            if count and int(kept[-1]) - first + 1 != count:
                raise AssertionError("a window's kept positions must be one run")
            a, b = max(lo, stitched), min(hi, stitched + count)
            if a < b:
                plan[s] = (first + a - stitched, first + b - stitched, cursor + a - lo)
            stitched += count
        cursor += hi - lo
    return plan, cursor


def _too_long(record_id: str, n_tokens: int, max_length: int) -> str:
    return (
        f"record {record_id} has {int(n_tokens)} tokens, over the limit of {max_length} "
        "(use long='split' / --long split to embed it in windows, or truncate)"
    )
