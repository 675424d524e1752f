"""Jobs through the routes: a chunk stream for one plan, or many jobs sharing forward passes.

A service collects records from many requests, each with its own layers, pooling and
combine. Recomputing the model per request would waste the batching it exists for, so
`embed_jobs` groups the jobs by what decides the forward pass and runs each group once:

- sentence level, truncated: every job with the same `max_length` shares every batch (the
  sentence route pools each job its own way);
- the windowed routes (token, word, and `long='split'`): jobs that share level, long mode,
  window, `include_special` and the pooling run once with the union of their layers, kept
  per layer; each job then takes its layers and combines them. Combining after pooling is
  exact where the pooling is linear (every pooling but max), so jobs that pool with max and
  combine layers run with their own plan.

Each job's result equals the job run alone (within float rounding). A job whose input is bad
gets its error in its place; the others are embedded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from ..chunks import RaggedChunk, SentenceChunk, concat_chunks, take_records
from ..errors import BertlayersError
from ..io.readers import Record
from ..options import Combine, DType, Level, Pooling, WordPooling
from ..sinks import ArrayRows, Reserve
from .encoder import Encoder
from .plan import Plan
from .progress import Progress
from .sentence import pool_jobs
from .windowed import chunked, ragged_chunks, token_chunks

Job = tuple[Sequence[Record], Plan]


def iter_chunks(
    encoder: Encoder,
    records: Iterable[Record],
    plan: Plan,
    progress: Progress | None = None,
    reserve: Reserve | None = None,
) -> Iterator[SentenceChunk]:
    """Embed records chunk by chunk along the plan's route; each chunk whole, in input order.

    At token level a chunk's rows are written, as batches finish, into room made by
    `reserve` (a sink's, e.g. a store's file; by default an array in memory)."""
    progress = progress or Progress(False, None)
    if plan.config.level is Level.TOKEN:
        return token_chunks(encoder, records, plan, progress, reserve or ArrayRows)
    if plan.config.windowed:
        return ragged_chunks(encoder, records, plan, progress)
    return _sentence_chunks(encoder, records, plan, progress)


def _sentence_chunks(
    encoder: Encoder, records: Iterable[Record], plan: Plan, progress: Progress
) -> Iterator[SentenceChunk]:
    for chunk in chunked(records, plan.config.chunk_size):
        [outcome] = pool_jobs(encoder, [(chunk, plan)], progress)
        if isinstance(outcome, BertlayersError):
            raise outcome
        yield outcome


def embed_whole(encoder: Encoder, records: Sequence[Record], plan: Plan) -> SentenceChunk:
    """All the records in one chunk: sorted and batched together, nothing streamed."""
    if not records:
        return empty_chunk(plan)
    whole = replace(plan, config=replace(plan.config, chunk_size=max(len(records), 1)))
    return concat_chunks(list(iter_chunks(encoder, records, whole)))


def empty_chunk(plan: Plan) -> SentenceChunk:
    """The chunk of no records, of the plan's level and row shape."""
    vectors = np.zeros((0, *plan.row_shape), plan.config.output_dtype.value)
    no_ints, none = np.zeros(0, np.int64), np.zeros(0, bool)
    if plan.config.level is Level.SENTENCE:
        return SentenceChunk([], vectors, no_ints, none, no_ints)
    spans = np.zeros((0, 2), np.int64)
    return RaggedChunk([], vectors, no_ints, none, no_ints, True, no_ints, [], spans, [])


def embed_jobs(encoder: Encoder, jobs: Sequence[Job]) -> list[SentenceChunk | BertlayersError]:
    """Embed each job's records with its own plan, sharing forward passes where possible.

    Returns per job a chunk of its records in input order, or the `BertlayersError` its input
    raised. Errors that are not about the input (out of memory, a bug) propagate.
    """
    outcomes: list = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for j, (_, plan) in enumerate(jobs):
        groups.setdefault(forward_key(plan), []).append(j)
    for key, members in groups.items():
        share = _windowed if key[0] == "windowed" else pool_jobs
        results = share(encoder, [jobs[j] for j in members])
        for j, result in zip(members, results, strict=True):
            outcomes[j] = result
    return outcomes


def forward_key(plan: Plan) -> tuple:
    """What must be equal for two jobs to share forward passes (see the module docstring)."""
    config = plan.config
    if not config.windowed:
        return ("pooled", plan.max_length)
    key: tuple = (
        "windowed",
        config.level,
        config.long,
        plan.max_length,
        plan.stride,
        config.include_special,
    )
    if config.level is Level.SENTENCE:
        key += (config.pooling,)
    if config.level is Level.WORD:
        key += (config.word_pooling,)
    if not _linear(plan) and config.combine is not Combine.STACK:
        key += (config.combine, plan.layers)
    return key


def _linear(plan: Plan) -> bool:
    """Whether pooling commutes with combining layers (every pooling but max)."""
    config = plan.config
    if config.level is Level.SENTENCE:
        return config.pooling is not Pooling.MAX
    if config.level is Level.WORD:
        return config.word_pooling is not WordPooling.MAX
    return True


def _windowed(encoder: Encoder, jobs: list[Job]) -> list[SentenceChunk | BertlayersError]:
    """Run the jobs' records once with the union of their layers, then combine per job."""
    first = jobs[0][1]
    records = [r for recs, _ in jobs for r in recs]
    shared = _linear(first) or first.config.combine is Combine.STACK
    union = sorted({i for _, plan in jobs for i in plan.layers})
    # float32 whatever the jobs asked for: each is cast to its own output dtype after
    if shared:
        config = replace(
            first.config, layers=tuple(union), combine=Combine.STACK, output_dtype=DType.FLOAT32
        )
        run = replace(
            first, config=config, selection=replace(first.selection, indices=tuple(union))
        )
    else:  # combined, max-pooled: only identical layers and combine share
        run = replace(first, config=replace(first.config, output_dtype=DType.FLOAT32))
    try:
        merged = embed_whole(encoder, records, run)
    except BertlayersError as err:
        if len(jobs) == 1:
            return [err]
        # one job's input is bad: embed each on its own so only that one fails
        return [_windowed(encoder, [job])[0] for job in jobs]
    outcomes: list = []
    start = 0
    for records_of_job, plan in jobs:
        mine = take_records(merged, start, start + len(records_of_job))
        start += len(records_of_job)
        if shared:
            positions = [union.index(i) for i in plan.layers]
            vectors = _combine(np.asarray(mine.vectors), positions, plan)
        else:
            vectors = np.asarray(mine.vectors).astype(plan.config.output_dtype.value)
        mine.vectors = vectors
        outcomes.append(mine)
    return outcomes


def _combine(vectors: np.ndarray, positions: list[int], plan: Plan) -> np.ndarray:
    """Rows of union-layer vectors `(..., K_union, H)` as a job asked: its layers, combined,
    in its output dtype."""
    chosen = vectors[..., positions, :]
    combine = plan.config.combine
    if combine is Combine.MEAN:
        chosen = chosen.mean(axis=-2, keepdims=True)
    elif combine is Combine.SUM:
        chosen = chosen.sum(axis=-2, keepdims=True)
    elif combine is Combine.CONCAT:
        chosen = chosen.reshape(*chosen.shape[:-2], 1, -1)
    return np.ascontiguousarray(chosen, dtype=plan.config.output_dtype.value)
