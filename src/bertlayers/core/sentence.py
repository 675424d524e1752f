"""The sentence route: one vector per text (pairs too), long texts truncated, pooled on the
device batch by batch.

The tokenizer builds each sequence (special tokens, segments); sequences of every job that
shares the length limit are sorted and packed into batches together; each batch runs to the
deepest layer any job in it asked for, and each job's rows are pooled with its own layers,
combine, pooling and `include_special` (jobs that pool alike in one call). One job is the
streaming run's chunk; several are a service's requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..chunks import SentenceChunk
from ..errors import BertlayersError, InputError
from ..io.readers import Record
from ..options import Combine, LongMode
from .batching import Encoded, collate, naming_records, pair_groups, plan_batches, tokenize
from .encoder import Encoder
from .plan import Plan, too_long
from .pooling import combine_layers, pool, pooling_mask
from .progress import Progress

Job = tuple[Sequence[Record], Plan]


def pool_jobs(
    encoder: Encoder, jobs: Sequence[Job], progress: Progress | None = None
) -> list[SentenceChunk | BertlayersError]:
    """Embed each job's records, one row per record, sharing batches across jobs.

    Every job must have the same `max_length`. Returns per job a `SentenceChunk` in input
    order, or the `BertlayersError` its input raised (the other jobs are embedded)."""
    outcomes: list = [None] * len(jobs)
    encoded = _tokenize_jobs(encoder, jobs, outcomes)
    if not encoded:
        return outcomes
    plans = [jobs[j][1] for j, _ in encoded]
    # jobs that pool alike share a group: one pooling call per batch for all of them
    keys = [
        (p.layers, p.config.combine, p.config.pooling, p.config.include_special, p.row_shape)
        for p in plans
    ]
    group_of = {key: g for g, key in enumerate(dict.fromkeys(keys))}
    leader = {group_of[k]: o for o, k in reversed(list(enumerate(keys)))}  # a job per group
    sizes = [len(enc.input_ids) for _, enc in encoded]
    group = np.repeat([group_of[k] for k in keys], sizes)
    where = np.empty(len(group), dtype=np.int64)  # each row's place in its group's output
    filled = [0] * len(group_of)
    starts: list[int] = []  # each job's first row in its group's output
    row = 0
    for key, size in zip(keys, sizes, strict=True):
        g = group_of[key]
        starts.append(filled[g])
        where[row : row + size] = np.arange(filled[g], filled[g] + size)
        filled[g] += size
        row += size
    # float32 in the group's output; each job is cast to its own output dtype at the end
    outputs = [
        np.empty((filled[g], *plans[o].row_shape), dtype=np.float32)
        for g, o in sorted(leader.items())
    ]
    merged = _merge([enc for _, enc in encoded])
    lengths = merged.lengths
    first = plans[0]  # batching settings change speed only: the first job's are used
    for rows in plan_batches(
        lengths, first.batch_tokens, first.config.max_batch_size, first.config.max_padding
    ):
        batch = collate(merged, rows, encoder.pad_id)
        groups = group[rows]
        present = np.unique(groups).tolist()
        needed = sorted({i for g in present for i in plans[leader[g]].layers})
        by_layer = dict(zip(needed, encoder.hidden_state_list(batch, needed), strict=True))
        attention = encoder.to_device(batch["attention_mask"])
        special = encoder.to_device(batch["special_tokens_mask"])
        for g in present:
            plan = plans[leader[g]]
            mine = np.flatnonzero(groups == g)
            take = None if len(mine) == len(rows) else torch.from_numpy(mine).to(attention.device)
            pooled = _pool(by_layer, attention, special, plan, take)  # (K', b, H')
            outputs[g][where[rows[mine]]] = pooled.transpose(0, 1).cpu().numpy()
        del by_layer
        if progress is not None:
            progress.update(len(rows), int(lengths[rows].sum()))
    for o, (j, enc) in enumerate(encoded):
        records, plan = jobs[j]
        vectors = outputs[group_of[keys[o]]][starts[o] : starts[o] + sizes[o]]
        outcomes[j] = SentenceChunk(
            ids=[r.id for r in records],
            vectors=vectors.astype(plan.config.output_dtype.value, copy=False),
            n_tokens=enc.full_lengths,
            truncated=enc.truncated,
            windows=np.ones(len(records), dtype=np.int64),
        )
    return outcomes


def _pool(
    by_layer: dict[int, torch.Tensor],
    attention: torch.Tensor,
    special: torch.Tensor,
    plan: Plan,
    take: torch.Tensor | None,
) -> torch.Tensor:
    """One group's rows pooled: `(K', b, H')`. Kept layers are pooled one by one, straight
    from the model's outputs (no `(K, B, T, H)` stack); combined layers are combined per
    token first, then pooled."""

    def part(t: torch.Tensor) -> torch.Tensor:
        return t if take is None else t.index_select(0, take)

    config = plan.config
    mask = pooling_mask(part(attention), part(special), config.include_special)
    states = [part(by_layer[i]).float() for i in plan.layers]
    if config.combine is Combine.STACK:
        return torch.stack([pool(s, mask, config.pooling) for s in states])
    return pool(combine_layers(torch.stack(states), config.combine), mask, config.pooling)


def token_counts(encoder: Encoder, records: Sequence[Record]) -> np.ndarray:
    """Tokens of each record, special tokens included, before truncation: `(N,)`."""
    counts = np.zeros(len(records), dtype=np.int64)
    for group in pair_groups(records):
        texts = [records[i].text for i in group]
        pairs = [records[i].pair for i in group] if records[group[0]].pair is not None else None
        with naming_records(records), encoder.tokenizer_lock:
            encoded = encoder.tokenizer(
                texts, pairs, add_special_tokens=True, truncation=False, verbose=False
            )["input_ids"]
        counts[group] = [len(ids) for ids in encoded]
    return counts


def _tokenize_jobs(encoder: Encoder, jobs: Sequence[Job], outcomes: list) -> list:
    """Each job's tokens, from one tokenizer call for all when that succeeds (else job by
    job, so that only a bad job fails); a job too long for `long='error'` gets its error."""
    live = []
    for j, (records, _) in enumerate(jobs):
        if len(records):
            live.append(j)
        else:
            outcomes[j] = SentenceChunk(
                [],
                np.zeros((0, *jobs[j][1].row_shape), jobs[j][1].config.output_dtype.value),
                np.zeros(0, np.int64),
                np.zeros(0, bool),
                np.zeros(0, np.int64),
            )
    if not live:
        return []
    max_length = jobs[live[0]][1].max_length  # the same for every job here

    def run(records: list[Record]) -> Encoded:
        with naming_records(records), encoder.tokenizer_lock:
            return tokenize(encoder.tokenizer, records, max_length, encoder.uses_token_types)

    per_job: list[tuple[int, Encoded]] = []
    try:
        whole = run([r for j in live for r in jobs[j][0]])
        bounds = np.cumsum([0] + [len(jobs[j][0]) for j in live])
        per_job = [
            (j, _slice(whole, a, b)) for j, a, b in zip(live, bounds[:-1], bounds[1:], strict=True)
        ]
    except BertlayersError:
        for j in live:
            try:
                per_job.append((j, run(list(jobs[j][0]))))
            except BertlayersError as err:
                outcomes[j] = err
    encoded = []
    for j, enc in per_job:
        records, plan = jobs[j]
        if plan.config.long is LongMode.ERROR and enc.truncated.any():
            i = int(np.flatnonzero(enc.truncated)[0])
            outcomes[j] = InputError(too_long(records[i].id, enc.full_lengths[i], max_length))
            continue
        encoded.append((j, enc))
    return encoded


def _slice(enc: Encoded, start: int, stop: int) -> Encoded:
    """Rows `start:stop` of an `Encoded`."""
    return Encoded(
        input_ids=enc.input_ids[start:stop],
        token_type_ids=None if enc.token_type_ids is None else enc.token_type_ids[start:stop],
        special_mask=enc.special_mask[start:stop],
        full_lengths=enc.full_lengths[start:stop],
        truncated=enc.truncated[start:stop],
    )


def _merge(parts: list[Encoded]) -> Encoded:
    """One `Encoded` holding the rows of several, in order."""
    if len(parts) == 1:
        return parts[0]
    types = None
    if all(p.token_type_ids is not None for p in parts):
        types = [row for p in parts for row in p.token_type_ids]  # type: ignore[union-attr]
    return Encoded(
        input_ids=[row for p in parts for row in p.input_ids],
        token_type_ids=types,
        special_mask=[row for p in parts for row in p.special_mask],
        full_lengths=np.concatenate([p.full_lengths for p in parts]),
        truncated=np.concatenate([p.truncated for p in parts]),
    )
