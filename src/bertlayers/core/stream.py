"""The streaming run: records in chunks through an engine into a sink (memory or a store).

The engine is a local `Engine` or a server seen as one (`bertlayers.client.RemoteEngine`):
it plans the config once, then embeds chunk by chunk.

Each chunk comes back whole and in input order; a store makes it durable (so a run can be
resumed), the in-memory sink keeps it. A store's first chunk holds at most `FIRST_CHUNK` texts
(then `chunk_size` each): work is durable within seconds, so an early Ctrl-C keeps it. The
boundaries depend only on the position in the input (`FIRST_CHUNK`, then every `chunk_size`),
and a resumed run, which starts at one, cuts the rest as the uninterrupted run would: its rows
are the same bytes. The provenance of the whole run is built once, at the end, and the
truncation warning counts every text (a resumed run's earlier ones too).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from ..errors import ReplacedWordsWarning, TruncationWarning
from ..io.readers import Record
from ..provenance import PerTextLog, RunInfo, build_provenance
from ..sinks import Sink
from .config import ExtractConfig
from .progress import Progress, text_chars

FIRST_CHUNK = 64  # texts in a store's first chunk: durable within seconds on a CPU

if TYPE_CHECKING:
    from ..chunks import SentenceChunk
    from ..sinks import Reserve
    from .plan import Plan


class Embedder(Protocol):
    """What the streaming run needs of an engine (a local `Engine`, or a server's)."""

    @property
    def run_info(self) -> RunInfo: ...

    def plan(self, config: ExtractConfig | Plan) -> Plan: ...

    def iter_chunks(
        self,
        records: Iterable[Record],
        config: ExtractConfig | Plan,
        progress: Progress | None = None,
        reserve: Reserve | None = None,
    ) -> Iterator[SentenceChunk]: ...


def stream(
    engine: Embedder,
    records: Iterable[Record],
    sink: Sink,
    config: ExtractConfig | Plan | None = None,
    progress: bool = False,
    total: int | None = None,
    total_chars: int | None = None,
) -> dict:
    """Stream records through the engine into `sink`; returns the provenance written.

    On any failure (bad record, Ctrl-C) the sink is aborted with what it already has.
    Texts over the length limit are truncated (or split, or refused, as `long` says) and
    truncation is reported with a `TruncationWarning`. `total` (texts) and `total_chars`
    (their characters, texts and pairs) size the progress bar: with the characters it
    counts tokens, whose rate is steady, not texts, which come longest first.
    """
    plan = engine.plan(config or ExtractConfig())
    settings, row_shape, run = plan.settings(), plan.row_shape, engine.run_info
    log = PerTextLog()
    earlier = getattr(sink, "earlier_texts", None)  # a resumed store's first run
    if earlier:
        log.add_earlier(*earlier)
    bar = Progress(progress, total if total is not None else _len_or_none(records), total_chars)
    read = _Counted(records)
    try:
        for chunk in _chunks(engine, read, plan, bar, sink):
            sink.write(chunk)
            log.add(chunk)
            if chunk.chunk_end:
                bar.calibrate(read.chars)
    except BaseException as err:
        bar.close(failed=True)
        message = str(err) or type(err).__name__
        sink.abort(build_provenance(run, settings, row_shape, log, False, message))
        raise
    bar.close()
    provenance = build_provenance(run, settings, row_shape, log, True)
    warn_truncated(log, settings["max_length"])
    sink.close(provenance)
    # a store may complete the record (a resumed run's texts, its format)
    return getattr(sink, "provenance", None) or provenance


class _Counted:
    """The records, counting the characters of those read (what the chunks done weigh)."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = records
        self.chars = 0

    def __iter__(self) -> Iterator[Record]:
        for record in self.records:
            self.chars += text_chars(record.text, record.pair)
            yield record


def _chunks(
    engine: Embedder, records: Iterable[Record], plan: Plan, bar: Progress, sink: Sink
) -> Iterator[SentenceChunk]:
    """The engine's chunks; a store that starts from nothing gets a first chunk of
    `FIRST_CHUNK` texts (see the module docstring)."""
    first = min(FIRST_CHUNK, plan.config.chunk_size)
    fresh = getattr(sink, "resumed_from", None) == 0  # a store, nothing durable before
    if not fresh or first >= plan.config.chunk_size:
        yield from engine.iter_chunks(records, plan, bar, sink.reserve)
        return
    iterator = iter(records)
    head = list(itertools.islice(iterator, first))
    yield from engine.iter_chunks(head, plan, bar, sink.reserve)
    yield from engine.iter_chunks(iterator, plan, bar, sink.reserve)


def _len_or_none(items: object) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def warn_truncated(log: PerTextLog, max_length: int) -> None:
    """The `TruncationWarning` (and the warning for words that gave no token) of a run."""
    count = log.truncated
    if count:
        first = log.first_truncated
        more = ", ..." if count > len(first) else ""
        warnings.warn(
            TruncationWarning(
                f"{count} of {log.texts} texts were longer than {max_length} tokens and "
                f"were truncated (ids: {', '.join(first)}{more}); their 'truncated' flag is set "
                "in the output's index"
            ),
            stacklevel=3,
        )
    if log.replaced:
        first = ", ".join(f"record {rid} word {w + 1}" for rid, w in log.replaced[:3])
        warnings.warn(
            ReplacedWordsWarning(
                f"{len(log.replaced)} words gave no token and were embedded as the unknown "
                f"token ({first}{', ...' if len(log.replaced) > 3 else ''}); they are listed "
                "in the provenance under 'replaced_words'"
            ),
            stacklevel=3,
        )


def stream_attention(
    engine,
    records: Iterable[Record],
    sink: Sink,
    plan,
    progress: bool = False,
    total: int | None = None,
    each=None,
    dtype: str = "float32",
) -> dict:
    """Stream records' attention maps into `sink` (a store: resumable, as embeddings), one
    text's `T²` (query, key) rows each (`bertlayers.maps.maps_chunk`); returns the provenance.

    `each(maps)` sees every text's `AttentionMaps` first and returns what is written (the
    maps, a rollout of them) — a place for streamed statistics too."""
    from ..maps import maps_chunk

    settings = {**plan.settings(), "level": "attention", "attention_level": plan.config.level.value}
    settings["output_dtype"] = dtype
    row_shape = (len(plan.layers), len(plan.heads))
    run = engine.run_info
    log = PerTextLog()
    earlier = getattr(sink, "earlier_texts", None)
    if earlier:
        log.add_earlier(*earlier)
    bar = Progress(progress, total if total is not None else _len_or_none(records))
    try:
        for texts in engine.iter_attention(records, plan, bar):
            if each is not None:
                texts = [each(t) for t in texts]
                row_shape = texts[0].maps.shape[:2] if texts else row_shape
            chunk = maps_chunk(texts, dtype)
            sink.write(chunk)
            log.add(chunk)
    except BaseException as err:
        bar.close(failed=True)
        message = str(err) or type(err).__name__
        sink.abort(build_provenance(run, settings, row_shape, log, False, message))
        raise
    bar.close()
    provenance = build_provenance(run, settings, row_shape, log, True)
    warn_truncated(log, plan.max_length)
    sink.close(provenance)
    return getattr(sink, "provenance", None) or provenance
