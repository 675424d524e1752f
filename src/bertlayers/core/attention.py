"""The attention route: maps per selected layer and head for each text, beside the sentence
and windowed routes.

Texts (pairs, pre-split words) are tokenized with their special tokens, sorted by length and
batched under a budget of map bytes (a batch of B texts of T tokens holds B·L·A·T² weights
in eager attention); one eager pass per batch stops at the deepest layer asked for, and each
text's rows and columns are cut to its own T, so a text's maps equal those of the text run
alone. Word level merges pieces as Clark et al. (2019). Results come back in input order,
chunk by chunk, each chunk's maps under `batch_bytes` several times over at most.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError, OptionError
from ..io.readers import Record
from ..layers import resolve_attention_layers, resolve_heads
from ..maps import AttentionMaps, merge_words
from ..options import Level, LongMode
from .batching import naming_records, pair_groups
from .config import AttentionConfig
from .encoder import Encoder
from .progress import Progress


@dataclass(frozen=True)
class AttentionPlan:
    """An `AttentionConfig` resolved against one model, once."""

    config: AttentionConfig
    layers: tuple[int, ...]  # 1..L
    heads: tuple[int, ...]  # 0..A-1
    num_heads: int
    max_length: int  # tokens per text, special tokens included

    def settings(self) -> dict:
        """The resolved settings, as a provenance records them."""
        return {
            "level": self.config.level.value,
            "kind": "norms" if self.config.norms else "attention",
            "layers": list(self.layers),
            "heads": list(self.heads),
            "max_length": self.max_length,
            "long": self.config.long.value,
        }

    def map_bytes(self, n_tokens: int) -> int:
        """Bytes of one text's float32 maps `(K, A, T, T)`."""
        return len(self.layers) * len(self.heads) * n_tokens * n_tokens * 4


def resolve_attention_plan(config: AttentionConfig, encoder: Encoder) -> AttentionPlan:
    """Resolve layers (1..L), heads and the length limit against the loaded model."""
    info = encoder.info
    if info.num_heads < 1:
        raise OptionError(f"cannot tell how many attention heads {info.name} has")
    layers = resolve_attention_layers(config.layers, info.num_layers)
    heads = resolve_heads(config.heads, info.num_heads)
    limit = info.max_length
    if config.max_tokens is not None:
        limit = min(config.max_tokens, limit)
    return AttentionPlan(config, layers, heads, info.num_heads, limit)


@dataclass
class _Tokens:
    """One text as the attention pass reads it."""

    record: Record
    ids: list[int]
    types: list[int] | None
    special: np.ndarray  # (T,) bool
    segments: np.ndarray  # (T,) int64
    spans: np.ndarray  # (T, 2)
    word_ids: np.ndarray  # (T,) -1 for special tokens; a pair's words after the text's
    full: int  # tokens before truncation
    truncated: bool


def attention_chunks(
    encoder: Encoder,
    records: Iterable[Record],
    plan: AttentionPlan,
    progress: Progress | None = None,
) -> Iterator[list[AttentionMaps]]:
    """Each chunk of records' maps, in input order."""
    progress = progress or Progress(False, None)
    iterator = iter(records)
    while chunk := [r for _, r in zip(range(plan.config.chunk_size), iterator, strict=False)]:
        tokens = _tokenize(encoder, chunk, plan)
        for group in _by_bytes(tokens, plan):
            yield _run(encoder, group, plan, progress)


def _by_bytes(tokens: list[_Tokens], plan: AttentionPlan) -> Iterator[list[_Tokens]]:
    """Consecutive texts whose maps stay under `batch_bytes` (one text at least)."""
    group: list[_Tokens] = []
    size = 0
    for item in tokens:
        cost = plan.map_bytes(len(item.ids))
        if group and size + cost > plan.config.batch_bytes:
            yield group
            group, size = [], 0
        group.append(item)
        size += cost
    if group:
        yield group


def _batches(lengths: np.ndarray, plan: AttentionPlan) -> list[np.ndarray]:
    """Longest first; a batch closes when its padded maps over every layer run would pass
    `batch_bytes`, or when padding would be over half its cells (a map costs T²)."""
    order = np.argsort(-lengths, kind="stable")
    per_cell = max(plan.layers) * plan.num_heads * 4
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        end, real = start + 1, longest * longest
        while end < len(order) and end - start < plan.config.max_batch_size:
            size, t = end - start + 1, int(lengths[order[end]])
            padded = size * longest * longest
            if padded * per_cell > plan.config.batch_bytes or (real + t * t) < padded / 2:
                break
            real += t * t
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def _run(
    encoder: Encoder, group: list[_Tokens], plan: AttentionPlan, progress: Progress
) -> list[AttentionMaps]:
    lengths = np.fromiter((len(t.ids) for t in group), dtype=np.int64, count=len(group))
    out: list[AttentionMaps | None] = [None] * len(group)
    for rows in _batches(lengths, plan):
        batch = _collate([group[i] for i in rows], encoder.pad_id)
        maps, norms = encoder.attention(batch, plan.layers, plan.heads, plan.config.norms)
        maps = maps.cpu().numpy()  # (B, K, A, T, T)
        norms = None if norms is None else norms.cpu().numpy()  # (B, K, A, T)
        for b, i in enumerate(rows.tolist()):
            t = int(lengths[i])
            mine = maps[b, :, :, :t, :t]
            if norms is not None:
                mine = mine * norms[b, :, :, None, :t]
            out[i] = _result(encoder, group[i], np.ascontiguousarray(mine), plan)
        progress.update(len(rows), int(lengths[rows].sum()))
    return out  # type: ignore[return-value]


def _collate(items: Sequence[_Tokens], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(t.ids) for t in items)
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64)
    for b, t in enumerate(items):
        ids[b, : len(t.ids)] = t.ids
        mask[b, : len(t.ids)] = 1
        if t.types is not None:
            types[b, : len(t.types)] = t.types
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if items[0].types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch


def _result(encoder: Encoder, t: _Tokens, maps: np.ndarray, plan: AttentionPlan) -> AttentionMaps:
    with encoder.tokenizer_lock:
        items = encoder.tokenizer.convert_ids_to_tokens(t.ids)
    common = dict(
        id=t.record.id,
        layers=list(plan.layers),
        heads=list(plan.heads),
        n_tokens=t.full,
        truncated=t.truncated,
        kind="norms" if plan.config.norms else "attention",
    )
    if plan.config.level is Level.TOKEN:
        return AttentionMaps(
            maps=maps, items=list(items), spans=t.spans, special=t.special,
            segments=t.segments, word_ids=t.word_ids, level="token", **common,
        )  # fmt: skip
    merged, starts = merge_words(maps, t.word_ids)
    ends = np.r_[starts[1:], len(t.ids)]
    spans = np.stack([t.spans[starts, 0], t.spans[ends - 1, 1]], axis=1)
    words = []
    for u, start in enumerate(starts.tolist()):
        if t.special[start]:
            words.append(items[start])
        elif t.record.words is not None and t.segments[start] == 0:
            words.append(t.record.words[int(t.word_ids[start])])
        else:
            text = t.record.text if t.segments[start] == 0 else (t.record.pair or "")
            words.append(text[spans[u, 0] : spans[u, 1]])
    return AttentionMaps(
        maps=merged, items=words, spans=spans, special=t.special[starts],
        segments=t.segments[starts], level="word", **common,
    )  # fmt: skip


# ---------------------------------------------------------------- tokens


def _tokenize(encoder: Encoder, records: list[Record], plan: AttentionPlan) -> list[_Tokens]:
    """Each record's tokens with special tokens, cut (and flagged) at the limit under
    `long='truncate'`; a text over it under `long='error'` is refused, naming it."""
    split = [r.words is not None for r in records]
    if any(split) and not all(split):
        raise OptionError("a batch of records is either all pre-split words or all texts")
    if any(split) and any(r.pair is not None for r in records):
        raise OptionError("pre-split words come without pairs: give texts with their pairs")
    tokenizer = encoder.words_tokenizer if any(split) else encoder.tokenizer
    kwargs = {
        "add_special_tokens": True,
        "return_offsets_mapping": True,
        "return_special_tokens_mask": True,
        "return_token_type_ids": encoder.uses_token_types,
        "return_attention_mask": False,
        "is_split_into_words": any(split),
        "verbose": False,
    }
    limit = plan.max_length
    out: list[_Tokens | None] = [None] * len(records)
    for group in pair_groups(records):  # texts with a pair apart from those without
        mine = [records[i] for i in group]
        texts = [list(r.words) if r.words is not None else r.text for r in mine]
        pairs = [r.pair for r in mine] if mine[0].pair is not None else None
        with naming_records(mine), encoder.tokenizer_lock:
            full = tokenizer(texts, pairs, truncation=False, **kwargs)
            lengths = [len(ids) for ids in full["input_ids"]]
            over = [j for j, n in enumerate(lengths) if n > limit]
            if over and plan.config.long is LongMode.ERROR:
                j = over[0]
                raise InputError(
                    f"record {mine[j].id} has {lengths[j]} tokens, over the limit of {limit} "
                    "for attention maps (use {opt:long=truncate} to cut it"
                    + (
                        ", or a larger {opt:max_tokens})"
                        if limit < encoder.info.max_length
                        else ")"
                    )
                )
            cut = tokenizer(texts, pairs, truncation="longest_first", max_length=limit, **kwargs)
        for j, i in enumerate(group):
            out[i] = _tokens(records[i], cut, j, lengths[j], lengths[j] > limit)
    return out  # type: ignore[return-value]


def _tokens(record: Record, enc, i: int, full: int, truncated: bool) -> _Tokens:
    ids = list(enc["input_ids"][i])
    special = np.asarray(enc["special_tokens_mask"][i], dtype=bool)
    sequence = enc.sequence_ids(i)
    words = enc.word_ids(i)
    segments = np.zeros(len(ids), dtype=np.int64)
    word_ids = np.full(len(ids), -1, dtype=np.int64)
    in_text = [w for w, s in zip(words, sequence, strict=True) if s == 0 and w is not None]
    first_words = max(in_text, default=-1) + 1  # a pair's words are numbered after these
    current = 0
    for position, (w, s) in enumerate(zip(words, sequence, strict=True)):
        if s is not None:
            current = s
        segments[position] = current  # special tokens belong to the segment before them
        if w is not None and not special[position]:
            word_ids[position] = w + (first_words if s == 1 else 0)
    spans = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
    spans[special] = 0
    if record.words is not None:  # offsets are within each word: as positions in the text
        starts = np.r_[0, np.cumsum([len(w) + 1 for w in record.words])[:-1]]
        inside = word_ids >= 0
        spans[inside] += starts[word_ids[inside], None]
    types = list(enc["token_type_ids"][i]) if "token_type_ids" in enc else None
    return _Tokens(record, ids, types, special, segments, spans, word_ids, full, truncated)
