"""Tokenization and the order of work: sort by length, pack batches under a token budget.

Texts are tokenized without padding; those longer than the model's limit are tokenized again
with truncation and flagged. Batches hold texts of similar length (sorted), stay under a token
budget (padded tokens) and a padding cap, and remember each text's position in its chunk so
results go back in input order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BertlayersError
from ..io.readers import Record


@contextlib.contextmanager
def naming_records(records: Sequence[Record]) -> Iterator[None]:
    """Tokenizer errors carry no record: re-raise them naming the records tokenized."""
    try:
        yield
    except BertlayersError:
        raise
    except Exception as err:
        first, last = records[0].id, records[-1].id
        raise BertlayersError(f"cannot tokenize records {first}..{last}: {err}") from None


@dataclass
class Encoded:
    """The token ids of a chunk of records (ragged, unpadded) with their bookkeeping."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    special_mask: list[list[int]]
    full_lengths: np.ndarray  # (N,) tokens before truncation, special tokens included
    truncated: np.ndarray  # (N,) bool

    @property
    def lengths(self) -> np.ndarray:
        """Tokens each text runs with (after truncation): `(N,)`."""
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64)


def pair_groups(records: Sequence[Record]) -> list[list[int]]:
    """Positions of the records without a pair, then of those with one (either may be empty).

    A tokenizer called with pairs ends a text whose pair is empty with a second [SEP]; a
    text without a pair must not get one, so the two kinds are tokenized apart."""
    alone = [i for i, r in enumerate(records) if r.pair is None]
    paired = [i for i, r in enumerate(records) if r.pair is not None]
    return [group for group in (alone, paired) if group]


def tokenize(
    tokenizer, records: Sequence[Record], max_length: int, use_token_types: bool
) -> Encoded:
    """Tokenize a chunk with the fast tokenizer; truncate (and flag) texts over `max_length`.
    Records with and without a pair are tokenized apart (see `pair_groups`)."""
    groups = pair_groups(records)
    if len(groups) < 2:
        return _tokenize(tokenizer, records, max_length, use_token_types)
    parts = [
        _tokenize(tokenizer, [records[i] for i in g], max_length, use_token_types) for g in groups
    ]
    order = np.argsort(np.concatenate(groups), kind="stable")  # each record's row in the parts

    def rows(name: str) -> list:
        joined = [row for part in parts for row in getattr(part, name)]
        return [joined[i] for i in order]

    types = None if parts[0].token_type_ids is None else rows("token_type_ids")
    return Encoded(
        input_ids=rows("input_ids"),
        token_type_ids=types,
        special_mask=rows("special_mask"),
        full_lengths=np.concatenate([p.full_lengths for p in parts])[order],
        truncated=np.concatenate([p.truncated for p in parts])[order],
    )


def _tokenize(
    tokenizer, records: Sequence[Record], max_length: int, use_token_types: bool
) -> Encoded:
    texts = [r.text for r in records]
    has_pairs = any(r.pair is not None for r in records)
    pairs = [r.pair if r.pair is not None else "" for r in records] if has_pairs else None
    kwargs = {
        "add_special_tokens": True,
        "return_special_tokens_mask": True,
        "return_token_type_ids": use_token_types,
        "return_attention_mask": False,
        "verbose": False,
    }
    enc = tokenizer(texts, pairs, truncation=False, **kwargs)
    input_ids = enc["input_ids"]
    special = enc["special_tokens_mask"]
    types = enc["token_type_ids"] if use_token_types else None
    full = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(texts))
    long_rows = np.flatnonzero(full > max_length)
    if len(long_rows):
        long_texts = [texts[i] for i in long_rows]
        long_pairs = [pairs[i] for i in long_rows] if pairs is not None else None
        cut = tokenizer(
            long_texts,
            long_pairs,
            truncation="longest_first",
            max_length=max_length,
            **kwargs,
        )
        for j, i in enumerate(long_rows):
            input_ids[i] = cut["input_ids"][j]
            special[i] = cut["special_tokens_mask"][j]
            if types is not None:
                types[i] = cut["token_type_ids"][j]
    truncated = full > max_length
    return Encoded(input_ids, types, special, full, truncated)


MIN_FILL = 0.25  # share of the token budget a batch fills before the padding cap applies


def plan_batches(
    lengths: np.ndarray,
    batch_tokens: int,
    max_batch_size: int,
    max_padding: float = 0.25,
    min_fill: float = MIN_FILL,
) -> list[np.ndarray]:
    """Group positions into batches: longest first, padded size under `batch_tokens`.

    A batch also closes when adding a text would make more than `max_padding` of its padded
    tokens padding, so one long text never pads a batch of short ones; but not before it
    holds `min_fill` of the budget: a few texts of unlike lengths (a service's small rounds)
    run faster padded in one batch than as many tiny ones.
    """
    floor = min_fill * batch_tokens
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        real = 0
        end = start
        while end < n:
            size = end - start + 1
            if size > max_batch_size or size * longest > max(batch_tokens, longest):
                break
            new_real = real + int(lengths[order[end]])
            padded = size * longest
            if size > 1 and padded > floor and 1 - new_real / padded > max_padding:
                break
            real = new_real
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def collate(encoded: Encoded, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the rows of one batch into tensors: ids, attention mask, special mask, types."""
    lengths = np.fromiter((len(encoded.input_ids[i]) for i in rows), dtype=np.int64)
    width = int(lengths.max())
    attention = np.arange(width) < lengths[:, None]  # (B, T): real tokens, left-aligned

    def padded(sequences: list[list[int]], fill: int) -> torch.Tensor:
        out = np.full((len(rows), width), fill, dtype=np.int64)
        out[attention] = np.fromiter(
            (x for i in rows for x in sequences[i]), dtype=np.int64, count=int(lengths.sum())
        )
        return torch.from_numpy(out)

    batch = {
        "input_ids": padded(encoded.input_ids, pad_id),
        "attention_mask": torch.from_numpy(attention.astype(np.int64)),
        "special_tokens_mask": padded(encoded.special_mask, 0).bool(),
    }
    if encoded.token_type_ids:
        batch["token_type_ids"] = padded(encoded.token_type_ids, 0)
    return batch


# ---------------------------------------------------------------- token/word level, windows


@dataclass
class ContentTokens:
    """Each record's tokens without special tokens: ids, character spans, word ids.

    Word ids number the record's words densely from 0: the tokenizer's own words for raw
    text, the given words for pre-split input. Spans index into `record.text` (for pre-split
    input, the words joined by single spaces).
    """

    ids: list[np.ndarray]  # (n,) int64 per record: compact, a chunk holds thousands
    spans: list[np.ndarray]  # (n, 2) int64 per record
    word_ids: list[np.ndarray]  # (n,) int64 per record
    word_spans: list[np.ndarray]  # (n_words, 2) per record
    replaced: list[list[int]]  # per record: pre-split words that gave no token, fed as [UNK]


def _word_starts(words: Sequence[str]) -> np.ndarray:
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    return np.r_[0, np.cumsum(lengths + 1)[:-1]] if len(words) else lengths


def _raw_words(word_ids: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the tokenizer's word ids densely and give each word its character span."""
    if not len(word_ids):
        return word_ids, np.zeros((0, 2), dtype=np.int64)
    new_word = np.r_[True, word_ids[1:] != word_ids[:-1]]
    dense = np.cumsum(new_word) - 1
    starts = np.flatnonzero(new_word)
    word_spans = np.stack(
        [
            np.minimum.reduceat(spans[:, 0], starts),
            np.maximum.reduceat(spans[:, 1], starts),
        ],
        axis=1,
    )
    return dense.astype(np.int64), word_spans


def tokenize_content(tokenizer, words_tokenizer, records: Sequence[Record]) -> ContentTokens:
    """Tokenize without special tokens, keeping offsets and word ids (vectorised per chunk).

    A pre-split word that gives no token at all (an empty string, a zero-width joiner the
    normaliser removes) is fed as the tokenizer's unknown token, so it still gets a vector,
    and is reported in `replaced`. A word that still gets no token is an error naming it.
    """
    from ..errors import InputError

    kwargs = {
        "add_special_tokens": False,
        "return_offsets_mapping": True,
        "return_attention_mask": False,
        "return_token_type_ids": False,
        "verbose": False,
    }
    pre_split = [r.words is not None for r in records]
    out_ids: list[np.ndarray] = [np.zeros(0, np.int64)] * len(records)
    out_spans: list[np.ndarray] = [np.zeros((0, 2), np.int64)] * len(records)
    out_words: list[np.ndarray] = [np.zeros(0, np.int64)] * len(records)
    out_word_spans: list[np.ndarray] = [np.zeros((0, 2), np.int64)] * len(records)
    replaced: list[list[int]] = [[] for _ in records]

    raw_rows = [i for i, split in enumerate(pre_split) if not split]
    if raw_rows:
        enc = tokenizer([records[i].text for i in raw_rows], **kwargs)
        for j, i in enumerate(raw_rows):
            spans = np.asarray(enc["offset_mapping"][j], dtype=np.int64).reshape(-1, 2)
            word_ids = np.asarray([-1 if w is None else w for w in enc.word_ids(j)], dtype=np.int64)
            out_ids[i] = np.asarray(enc["input_ids"][j], dtype=np.int64)
            out_spans[i] = spans
            out_words[i], out_word_spans[i] = _raw_words(word_ids, spans)

    split_rows = [i for i, split in enumerate(pre_split) if split]
    if split_rows:
        words_lists = [list(records[i].words) for i in split_rows]
        enc = words_tokenizer(words_lists, is_split_into_words=True, **kwargs)
        for j, i in enumerate(split_rows):
            words = words_lists[j]
            ids = enc["input_ids"][j]
            offsets = enc["offset_mapping"][j]
            word_ids = [w for w in enc.word_ids(j)]
            missing = sorted(set(range(len(words))) - set(word_ids))
            if missing:
                fixed = list(words)
                for w in missing:
                    fixed[w] = tokenizer.unk_token
                again = words_tokenizer([fixed], is_split_into_words=True, **kwargs)
                ids, offsets = again["input_ids"][0], again["offset_mapping"][0]
                word_ids = list(again.word_ids(0))
                still = sorted(set(range(len(words))) - set(word_ids))
                if still:
                    raise InputError(
                        f"record {records[i].id}: word {still[0] + 1} ({words[still[0]]!r}) "
                        "cannot be aligned to any token"
                    )
                replaced[i] = missing
            word_arr = np.asarray(word_ids, dtype=np.int64)
            starts = _word_starts(words)
            spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2) + starts[word_arr, None]
            lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
            for w in replaced[i]:
                spans[word_arr == w] = [starts[w], starts[w] + lengths[w]]
            out_ids[i] = np.asarray(ids, dtype=np.int64)
            out_spans[i] = spans
            out_words[i] = word_arr
            out_word_spans[i] = np.stack([starts, starts + lengths], axis=1)
    return ContentTokens(out_ids, out_spans, out_words, out_word_spans, replaced)


@dataclass
class Windows:
    """Model inputs (one per window) for a group of records, and what each contributes.

    `keep[s]` marks the positions of sequence s whose vectors go to its record's stitched
    output: the prefix special tokens of its first window, the content tokens it owns, the
    suffix special tokens of its last window. Records' windows are consecutive sequences.
    """

    encoded: Encoded  # sequences, in record then window order
    record_of: np.ndarray  # (S,) record position in the group
    keep: list[np.ndarray]  # (T_s,) bool per sequence
    covered: np.ndarray  # (R,) content tokens each record's output covers
    windows: np.ndarray  # (R,) windows per record


def build_windows(
    content: ContentTokens,
    prefix: list[int],
    suffix: list[int],
    width: int,
    stride: int,
    split: bool,
    use_token_types: bool,
) -> Windows:
    """Cut each record into windows of `width` content tokens (or truncate it to one)."""
    from .windows import plan_windows, window_owners

    ids_out: list[list[int]] = []
    special_out: list[list[int]] = []
    keep_out: list[np.ndarray] = []
    record_of: list[int] = []
    covered = np.zeros(len(content.ids), dtype=np.int64)
    counts = np.zeros(len(content.ids), dtype=np.int64)
    p, q = len(prefix), len(suffix)
    for r, ids in enumerate(content.ids):
        n = len(ids)
        spans = plan_windows(n, width, stride) if split else [(0, min(n, width))]
        owners = window_owners(n, spans) if len(spans) > 1 else None
        covered[r] = spans[-1][1]
        counts[r] = len(spans)
        for w, (start, end) in enumerate(spans):
            keep = np.zeros(p + (end - start) + q, dtype=bool)
            keep[:p] = w == 0
            keep[p + end - start :] = w == len(spans) - 1
            keep[p : p + end - start] = True if owners is None else owners[start:end] == w
            ids_out.append([*prefix, *ids[start:end].tolist(), *suffix])
            special_out.append([1] * p + [0] * (end - start) + [1] * q)
            keep_out.append(keep)
            record_of.append(r)
    lengths = np.fromiter((len(x) for x in ids_out), dtype=np.int64, count=len(ids_out))
    encoded = Encoded(
        input_ids=ids_out,
        token_type_ids=[[0] * len(x) for x in ids_out] if use_token_types else None,
        special_mask=special_out,
        full_lengths=lengths,
        truncated=np.zeros(len(ids_out), dtype=bool),
    )
    return Windows(encoded, np.asarray(record_of, dtype=np.int64), keep_out, covered, counts)
