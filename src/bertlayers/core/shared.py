"""Several requests in one pass: records with different configs share the forward passes.

A service collects records from many requests, each with its own layers, pooling and combine.
Recomputing the model per request would waste the batching it exists for, so `embed_many`
groups the jobs by what decides the forward pass and runs each group once:

- sentence level, truncated: every job with the same `max_length` shares every batch; each
  batch runs to the deepest layer any job in it asked for, and each job's rows are pooled
  with its own layers, combine, pooling and `include_special`;
- the windowed routes (token, word, and `long="split"`): jobs that share level, long mode,
  window, `include_special` and the pooling run once with the union of their layers, kept
  per layer; each job then takes its layers and combines them. Combining after pooling is
  exact where the pooling is linear (every pooling but max), so jobs that pool with max and
  combine layers run with their own config.

Each job's results equal `Engine.embed(records, config)` (within float rounding). A job
whose input is bad gets its error in its place; the others are embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import BertlayersError, InputError
from ..io.readers import Record
from ..layers import resolve_layers
from ..options import Combine, DType, Level, LongMode, Pooling, WordPooling
from .batching import Encoded, collate, plan_batches, tokenize
from .config import ExtractConfig
from .pooling import combine_layers, pool, pooling_mask

if TYPE_CHECKING:
    from .engine import Engine

Job = tuple[Sequence[Record], ExtractConfig]


def forward_key(engine: Engine, config: ExtractConfig) -> tuple:
    """What must be equal for two jobs to share forward passes (see the module docstring)."""
    max_length = engine._max_length(config)
    if not config.windowed:
        return ("pooled", max_length)
    key: tuple = (
        "windowed",
        config.level,
        config.long,
        max_length,
        config.stride,
        config.include_special,
    )
    if config.level is Level.SENTENCE:
        key += (config.pooling,)
    if config.level is Level.WORD:
        key += (config.word_pooling,)
    if not _linear(config) and config.combine is not Combine.STACK:
        key += (config.combine, resolve_layers(config.layers, engine.info.num_layers).indices)
    return key


def _linear(config: ExtractConfig) -> bool:
    """Whether pooling commutes with combining layers (every pooling but max)."""
    if config.level is Level.SENTENCE:
        return config.pooling is not Pooling.MAX
    if config.level is Level.WORD:
        return config.word_pooling is not WordPooling.MAX
    return True


def embed_many(engine: Engine, jobs: Sequence[Job]) -> list:
    """Embed each job's records with its own config, sharing forward passes where possible.

    Returns, per job, its `RecordVectors` in input order, or the `BertlayersError` its input
    raised. Errors that are not about the input (out of memory, a bug) propagate.
    """
    outcomes: list = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for j, (_, config) in enumerate(jobs):
        try:
            groups.setdefault(forward_key(engine, config), []).append(j)
        except BertlayersError as err:
            outcomes[j] = err
    for key, members in groups.items():
        if key[0] == "pooled":
            results = _pooled(engine, [jobs[j] for j in members])
        else:
            results = _windowed(engine, [jobs[j] for j in members])
        for j, result in zip(members, results, strict=True):
            outcomes[j] = result
    return outcomes


# ---------------------------------------------------------------- sentence level, truncated


def _pooled(engine: Engine, jobs: list[Job]) -> list:
    """Tokenize the jobs together, then run all their records in shared batches, pooling
    once per batch for every set of jobs that pool alike (a service's requests mostly do)."""
    from .engine import RecordVectors

    outcomes: list = [None] * len(jobs)
    encoded = _tokenize_jobs(engine, jobs, outcomes)
    if not encoded:
        return outcomes
    merged = _merge([enc for _, enc in encoded])
    configs = [jobs[j][1] for j, _ in encoded]
    selections = [resolve_layers(c.layers, engine.info.num_layers) for c in configs]
    # jobs that pool alike share a group: one pooling call per batch for all of them
    keys = [
        (s.indices, c.combine, c.pooling, c.include_special, c.output_dtype)
        for c, s in zip(configs, selections, strict=True)
    ]
    group_of = {key: g for g, key in enumerate(dict.fromkeys(keys))}
    sizes = [len(enc.input_ids) for _, enc in encoded]
    group = np.repeat([group_of[k] for k in keys], sizes)
    where = np.empty(len(group), dtype=np.int64)  # each row's place in its group's output
    starts: list[int] = []  # each job's first row in its group's output
    filled = [0] * len(group_of)
    row = 0
    for key, size in zip(keys, sizes, strict=True):
        g = group_of[key]
        starts.append(filled[g])
        where[row : row + size] = np.arange(filled[g], filled[g] + size)
        filled[g] += size
        row += size
    leader = {group_of[k]: o for o, k in reversed(list(enumerate(keys)))}  # a job per group
    outputs = [
        np.empty(
            (filled[g], *engine.output_shape(configs[o], selections[o])),
            dtype=configs[o].output_dtype.value,
        )
        for g, o in sorted(leader.items())
    ]
    first = configs[0]  # batching settings change speed only: the first job's are used
    for rows in plan_batches(
        merged.lengths, engine.batch_tokens(first), first.max_batch_size, first.max_padding
    ):
        batch = collate(merged, rows, engine.encoder.pad_id)
        groups = group[rows]
        present = np.unique(groups).tolist()
        needed = sorted({i for g in present for i in selections[leader[g]].indices})
        states = engine.encoder.hidden_state_list(batch, needed)
        by_layer = dict(zip(needed, states, strict=True))
        attention = engine.encoder.to_device(batch["attention_mask"])
        special = engine.encoder.to_device(batch["special_tokens_mask"])
        for g in present:
            config, selection = configs[leader[g]], selections[leader[g]]
            mine = np.flatnonzero(groups == g)
            take = None if len(mine) == len(rows) else torch.from_numpy(mine).to(attention.device)

            def part(t: torch.Tensor, take=take) -> torch.Tensor:
                return t if take is None else t.index_select(0, take)

            mask = pooling_mask(part(attention), part(special), config.include_special)
            layer_states = [part(by_layer[i]) for i in selection.indices]
            if config.combine is Combine.STACK:
                pooled = torch.stack([pool(s.float(), mask, config.pooling) for s in layer_states])
            else:
                hidden = combine_layers(torch.stack(layer_states).float(), config.combine)
                pooled = pool(hidden, mask, config.pooling)
            pooled = pooled.transpose(0, 1).to(config.output_dtype.torch)  # (b, K', H')
            outputs[g][where[rows[mine]]] = pooled.cpu().numpy()
        del states, by_layer
    for o, (j, enc) in enumerate(encoded):
        vectors = outputs[group_of[keys[o]]][starts[o] : starts[o] + sizes[o]]
        outcomes[j] = [
            RecordVectors(
                id=record.id,
                vectors=vectors[i],
                n_tokens=int(enc.full_lengths[i]),
                truncated=bool(enc.truncated[i]),
                windows=1,
            )
            for i, record in enumerate(jobs[j][0])
        ]
    return outcomes


def _tokenize_jobs(engine: Engine, jobs: list[Job], outcomes: list) -> list[tuple[int, Encoded]]:
    """Each job's tokens, from one tokenizer call for all when that succeeds (else job by
    job, so that only a bad job fails); a job too long for `long="error"` gets its error."""
    from .engine import _naming_chunk, _too_long

    live = []
    for j, (records, _) in enumerate(jobs):
        if len(records):
            live.append(j)
        else:
            outcomes[j] = []
    if not live:
        return []
    max_length = engine._max_length(jobs[live[0]][1])  # the same for every job here

    def run(records: list[Record]) -> Encoded:
        with _naming_chunk(records), engine._tokenizing:
            return tokenize(
                engine.encoder.tokenizer, records, max_length, engine.encoder.uses_token_types
            )

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
        records, config = jobs[j]
        if config.long is LongMode.ERROR and enc.truncated.any():
            i = int(np.flatnonzero(enc.truncated)[0])
            outcomes[j] = InputError(_too_long(records[i].id, enc.full_lengths[i], max_length))
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


# ---------------------------------------------------------------- windowed routes


def _windowed(engine: Engine, jobs: list[Job]) -> list:
    """Run the jobs' records once with the union of their layers, then combine per job."""
    selections = [resolve_layers(c.layers, engine.info.num_layers) for _, c in jobs]
    union = sorted({i for s in selections for i in s.indices})
    first = jobs[0][1]
    shared = not (not _linear(first) and first.combine is not Combine.STACK)
    records = [r for recs, _ in jobs for r in recs]
    if not records:
        return [[] for _ in jobs]
    # float32 whatever the jobs asked for: each is cast to its own output dtype after
    if shared:
        config = replace(first, layers=union, combine=Combine.STACK, output_dtype=DType.FLOAT32)
    else:  # combined, max-pooled: only identical layers and combine share
        config = replace(first, output_dtype=DType.FLOAT32)
    try:
        merged = engine._embed_unlocked(records, config)
    except BertlayersError:
        if len(jobs) == 1:
            return [_error_of(engine, jobs[0])]
        # one job's input is bad: embed each on its own so only that one fails
        return [_windowed(engine, [job])[0] for job in jobs]
    outcomes: list = []
    start = 0
    for (recs, job_config), selection in zip(jobs, selections, strict=True):
        mine = merged[start : start + len(recs)]
        start += len(recs)
        for vectors in mine:
            if shared:
                positions = [union.index(i) for i in selection.indices]
                vectors.vectors = _combine(vectors.vectors, positions, job_config)
            else:
                vectors.vectors = vectors.vectors.astype(job_config.output_dtype.value)
        outcomes.append(mine)
    return outcomes


def _error_of(engine: Engine, job: Job) -> BertlayersError:
    records, config = job
    try:
        engine._embed_unlocked(list(records), config)
    except BertlayersError as err:
        return err
    raise AssertionError("a job failed together but not alone")  # pragma: no cover


def _combine(vectors: np.ndarray, positions: list[int], config: ExtractConfig) -> np.ndarray:
    """A record's union-layer vectors `(..., K_union, H)` as its job asked: its layers,
    combined, in its output dtype."""
    chosen = vectors[..., positions, :]
    if config.combine is Combine.MEAN:
        chosen = chosen.mean(axis=-2, keepdims=True)
    elif config.combine is Combine.SUM:
        chosen = chosen.sum(axis=-2, keepdims=True)
    elif config.combine is Combine.CONCAT:
        chosen = chosen.reshape(*chosen.shape[:-2], 1, -1)
    return np.ascontiguousarray(chosen, dtype=config.output_dtype.value)
