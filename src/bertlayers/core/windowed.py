"""The windowed route: token and word level, and any level with `long='split'`.

Texts are tokenized without special tokens and cut into windows where too long (one
truncated window otherwise); every window runs with its own special tokens, and each token
takes its vectors from the window where it has the most context (`windows.py`).
- token level: rows go straight to room the sink reserves, as each batch finishes (nothing
  held but one batch);
- word level, and split sentences: each record's windows are stitched, then pooled to words
  or to one sentence vector, in groups of records whose output stays under `chunk_bytes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields

import numpy as np
import torch

from ..chunks import RaggedChunk, SentenceChunk
from ..errors import InputError, OptionError
from ..io.readers import Record
from ..options import Combine, Level, LongMode
from ..sinks import ArrayRows, Reserve
from .batching import (
    ContentTokens,
    Windows,
    build_windows,
    collate,
    naming_records,
    plan_batches,
    tokenize_content,
)
from .encoder import Encoder
from .host import HostCopy
from .plan import Plan, too_long
from .pooling import combine_layers, pool_stitched, word_pooling
from .progress import Progress


def chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive lists of `size` records (the last one shorter)."""
    iterator = iter(records)
    while chunk := [r for _, r in zip(range(size), iterator, strict=False)]:
        yield chunk


def token_chunks(
    encoder: Encoder,
    records: Iterable[Record],
    plan: Plan,
    progress: Progress,
    reserve: Reserve = ArrayRows,
) -> Iterator[RaggedChunk]:
    """Token level: each chunk of records is batched as a whole (like pooled output), and
    its rows go straight to room `reserve` makes (a store's file; an array by default)."""
    prefix, suffix = encoder.special_template
    dtype = np.dtype(plan.config.output_dtype.value)
    for records_chunk in chunked(records, plan.config.chunk_size):
        content, full = content_tokens(encoder, records_chunk, plan)
        windows = windows_of(encoder, content, plan)
        layout, n_rows = token_layout(
            windows, len(prefix), len(suffix), plan.config.include_special
        )
        target = reserve(n_rows, plan.row_shape, dtype)
        _run_into(encoder, windows, layout, target, plan, progress)
        yield _assemble_tokens(encoder, records_chunk, content, windows, target.vectors, full, plan)


def ragged_chunks(
    encoder: Encoder, records: Iterable[Record], plan: Plan, progress: Progress
) -> Iterator[SentenceChunk]:
    """Word level, and split sentence level: windows are stitched per record and pooled,
    in groups of records whose output stays under `chunk_bytes`."""
    row_bytes = int(np.prod(plan.row_shape)) * 4  # word and sentence pooling work in float32
    for records_chunk in chunked(records, plan.config.chunk_size):
        content, full = content_tokens(encoder, records_chunk, plan)
        groups = list(_groups(content, row_bytes, plan.config.chunk_bytes))
        for number, group in enumerate(groups):
            sub = ContentTokens(
                *([getattr(content, f.name)[i] for i in group] for f in fields(ContentTokens))
            )
            windows = windows_of(encoder, sub, plan)
            pieces, cls = _run_windows(
                encoder, windows, plan, keep_cls=plan.config.level is Level.SENTENCE
            )
            chunk = _assemble(
                encoder, [records_chunk[i] for i in group], sub, windows, pieces, cls, full[group],
                plan,
            )  # fmt: skip
            chunk.chunk_end = number == len(groups) - 1
            yield chunk
            progress.update(len(group), int(windows.encoded.lengths.sum()))


# ---------------------------------------------------------------- tokens and windows


def content_tokens(
    encoder: Encoder, records: list[Record], plan: Plan
) -> tuple[ContentTokens, np.ndarray]:
    """Tokenize a chunk for the windowed routes (no pairs); the full token count of each."""
    for record in records:
        if record.pair is not None:
            raise OptionError(
                f"record {record.id}: sentence pairs are embedded at sentence level "
                "with long texts truncated ({opt:level=sentence}, {opt:long=truncate})"
            )
    with naming_records(records), encoder.tokenizer_lock:
        content = tokenize_content(encoder.tokenizer, encoder.words_tokenizer, records)
    n_special = sum(len(x) for x in encoder.special_template)
    full = np.fromiter((len(x) + n_special for x in content.ids), dtype=np.int64)
    if plan.config.long is LongMode.ERROR and (full > plan.max_length).any():
        i = int(np.flatnonzero(full > plan.max_length)[0])
        raise InputError(too_long(records[i].id, full[i], plan.max_length))
    return content, full


def windows_of(encoder: Encoder, content: ContentTokens, plan: Plan) -> Windows:
    """Model inputs for tokenized records: windows when splitting, else one (truncated)."""
    prefix, suffix = encoder.special_template
    width = plan.window if plan.window is not None else plan.max_length - len(prefix) - len(suffix)
    return build_windows(
        content,
        prefix,
        suffix,
        width,
        plan.stride or 0,
        split=plan.window is not None,
        use_token_types=encoder.uses_token_types,
    )


def _groups(content: ContentTokens, row_bytes: int, budget: int) -> Iterator[list[int]]:
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


def _layer_states(encoder: Encoder, batch: dict, plan: Plan) -> list[torch.Tensor]:
    """One `(B, T, H')` tensor per output layer; kept layers are not stacked (no copy)."""
    states = encoder.hidden_state_list(batch, plan.layers)
    if plan.config.combine is Combine.STACK:
        return states
    return list(combine_layers(torch.stack(states).float(), plan.config.combine).unbind(0))


def _batches(windows: Windows, plan: Plan) -> list[np.ndarray]:
    config = plan.config
    return plan_batches(
        windows.encoded.lengths, plan.batch_tokens, config.max_batch_size, config.max_padding
    )


# ---------------------------------------------------------------- token level


def _run_into(
    encoder: Encoder,
    windows: Windows,
    layout: np.ndarray,
    target,
    plan: Plan,
    progress: Progress,
) -> None:
    """Forward every window and put its rows in their place in `target`.

    `layout[s]` is `(src_lo, src_hi, dst_lo)` of sequence s. Batches run in length order
    over the whole chunk; rows go to the target as each batch finishes (no per-window
    pieces, no stitching), converted to the output dtype on the device.
    """
    encoded = windows.encoded
    dtype = plan.config.output_dtype.torch
    last = np.r_[windows.record_of[1:] != windows.record_of[:-1], True]
    host = HostCopy()  # the rows are put in the target before the next batch reuses it
    for rows in _batches(windows, plan):
        batch = collate(encoded, rows, encoder.pad_id)
        states = _layer_states(encoder, batch, plan)
        # (B, T, K', H'): each token's layers side by side, as its output row holds them
        stacked = host.numpy(torch.stack([h.to(dtype) for h in states], dim=2))
        del states
        for b, s in enumerate(rows):
            src_lo, src_hi, dst = layout[s]
            if src_hi > src_lo:
                target.put(int(dst), stacked[b, src_lo:src_hi])
        progress.update(int(last[rows].sum()), int(encoded.lengths[rows].sum()))


def token_layout(windows: Windows, p: int, q: int, keep_special: bool) -> tuple[np.ndarray, int]:
    """Where each window's rows go in a group's token-level output.

    A record's output is its windows' kept rows laid end to end (prefix specials, covered
    content, suffix specials), cut to the content unless special tokens are kept. Returns
    `(S, 3)` rows `(src_lo, src_hi, dst_lo)` (positions in the window, and the row of the
    output where the first goes) and the number of output rows.
    """
    layout = np.zeros((len(windows.keep), 3), dtype=np.int64)
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
                layout[s] = (first + a - stitched, first + b - stitched, cursor + a - lo)
            stitched += count
        cursor += hi - lo
    return layout, cursor


def _assemble_tokens(
    encoder: Encoder,
    records: list[Record],
    content: ContentTokens,
    windows: Windows,
    flat: np.ndarray,
    full: np.ndarray,
    plan: Plan,
) -> RaggedChunk:
    """Token level: the rows are in `flat` already; add each record's tokens and spans."""
    prefix, suffix = encoder.special_template
    keep_special = plan.config.include_special
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
        with encoder.tokenizer_lock:
            items.extend(encoder.tokenizer.convert_ids_to_tokens(ids))
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


# ---------------------------------------------------------------- word level, split sentences


def _run_windows(
    encoder: Encoder, windows: Windows, plan: Plan, keep_cls: bool
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Forward every window; per sequence the kept vectors `(n_keep, K', H')` (and CLS)."""
    encoded = windows.encoded
    pieces: list[np.ndarray] = [None] * len(encoded.input_ids)  # type: ignore[list-item]
    cls: list[np.ndarray] | None = [None] * len(pieces) if keep_cls else None  # type: ignore[list-item]
    for rows in _batches(windows, plan):
        batch = collate(encoded, rows, encoder.pad_id)
        states = encoder.hidden_state_list(batch, plan.layers)
        hidden = combine_layers(torch.stack(states).float(), plan.config.combine)  # (K', B, T, H')
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


def _assemble(
    encoder: Encoder,
    records: list[Record],
    content: ContentTokens,
    windows: Windows,
    pieces: list[np.ndarray],
    cls: list[np.ndarray] | None,
    full: np.ndarray,
    plan: Plan,
) -> SentenceChunk:
    """Word and sentence level: stitch each record's windows, then pool them."""
    config = plan.config
    p = len(encoder.special_template[0])
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
    flat = np.concatenate(vectors) if vectors else np.zeros((0, *plan.row_shape), out_dtype)
    return RaggedChunk(
        vectors=flat,
        lengths=np.asarray(lengths, dtype=np.int64),
        items=items,
        spans=np.concatenate(spans) if spans else np.zeros((0, 2), np.int64),
        replaced=replaced,
        **common,
    )


def _truncated(windows: Windows, content: ContentTokens) -> np.ndarray:
    """Records whose output covers fewer content tokens than they have."""
    return windows.covered < np.fromiter((len(x) for x in content.ids), dtype=np.int64)
