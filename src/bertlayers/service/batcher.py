"""Dynamic batching across requests: one worker thread owns the `Engine` and embeds what
every request queued, together.

Each request's records become one or more parts (a large request is cut into parts of at
most `round_tokens` tokens, so others interleave with it). The worker takes parts from the
front of the queue up to `round_tokens` and embeds them in one `Engine.embed_jobs` call:
parts whose settings share a forward pass share batches (packed by the library's
length-sorted token budget), each pooled its own way. Parts whose request expired or whose
client went away are dropped before they are computed. A call that fails for a reason other
than the input (e.g. out of memory) is split in halves and retried once; what still fails
gets 503, and the worker goes on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..chunks import concat_chunks
from ..core.attention import AttentionPlan
from ..core.config import ExtractConfig
from ..core.engine import Engine
from ..core.plan import Plan
from ..errors import BertlayersError
from ..io.readers import Record
from ..memory import trim_heap
from .metrics import Metrics


class QueueFull(Exception):
    """The queue holds `max_queue_tokens` already."""


class Expired(Exception):
    """The request's deadline passed before it was computed."""


class Dropped(Exception):
    """The client went away before the request was computed."""


class Unavailable(Exception):
    """The computation failed twice (e.g. out of memory), or the service is stopping."""


@dataclass
class Request:
    """What the worker needs to know of an HTTP request: its deadline, and whether its
    client is still there."""

    deadline: float | None  # time.monotonic() past which it is not computed
    cancelled: bool = False


@dataclass(eq=False)
class Part:
    """A request's records that run in one round: their plan, token count, the request they
    belong to, and the future their result is set on."""

    records: list[Record]
    plan: Plan | AttentionPlan
    tokens: int
    request: Request
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


class Batcher:
    """A bounded queue of parts and the worker thread that embeds them."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        max_queue_tokens: int,
        round_tokens: int,
        max_wait_ms: float = 0.0,
        trim_heap: bool = False,
        max_round_tokens: int | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_queue_tokens = max_queue_tokens
        self.round_tokens = round_tokens
        # a round grows with the queue up to this: more rows to sort by length, fuller batches
        self.max_round_tokens = max(round_tokens, max_round_tokens or round_tokens)
        self.max_wait = max_wait_ms / 1000
        self._queue: deque[Part] = deque()
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.warm = threading.Event()
        self.rate = 0.0  # tokens/s of the last embed call
        self.trim_heap = trim_heap  # acts on the whole process: the front end's choice

    # ------------------------------------------------------------------ requests

    def split(
        self, records: Sequence[Record], counts: Sequence[int]
    ) -> list[tuple[list[Record], int]]:
        """Cut a request's records into parts of at most `round_tokens` tokens (one record
        at least), in order."""
        parts: list[tuple[list[Record], int]] = []
        current: list[Record] = []
        tokens = 0
        for record, count in zip(records, counts, strict=True):
            if current and tokens + count > self.round_tokens:
                parts.append((current, tokens))
                current, tokens = [], 0
            current.append(record)
            tokens += int(count)
        if current:
            parts.append((current, tokens))
        return parts

    def submit(self, parts: list[Part]) -> None:
        """Queue all of a request's parts, or none: `QueueFull` when they do not fit."""
        tokens = sum(p.tokens for p in parts)
        with self._cond:
            if self._stopping:
                raise Unavailable("the service is shutting down")
            if self._queued_tokens + tokens > self.max_queue_tokens:
                raise QueueFull
            self._queue.extend(parts)
            self._queued_tokens += tokens
            self._gauges()
            self._cond.notify()

    def queued(self) -> tuple[int, int]:
        """(texts, tokens) waiting."""
        with self._cond:
            return sum(len(p.records) for p in self._queue), self._queued_tokens

    def _gauges(self) -> None:
        self.metrics.queue_texts.set(sum(len(p.records) for p in self._queue))
        self.metrics.queue_tokens.set(self._queued_tokens)

    # ------------------------------------------------------------------ the worker

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bertlayers-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _warm_up(self) -> None:
        self.engine.embed_jobs(
            [([Record(id="warm-up", text="warm up")], ExtractConfig(layers="all"))]
        )
        self.warm.set()

    def _take(self) -> list[Part] | None:
        """The next parts to embed, up to `round_tokens` — or, with more queued, up to
        `max_round_tokens` (one part at least); None to stop.

        The first part of each waiting request comes first, in arrival order, so a request
        queued behind a large one is not held until all of the large one's parts are done."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if self.max_wait:
                oldest = self._queue[0].queued_at
                while (
                    self._queued_tokens < self.round_tokens
                    and not self._stopping
                    and (left := oldest + self.max_wait - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
            taken: list[Part] = []
            tokens = 0
            requests: set[int] = set()
            budget = min(max(self._queued_tokens, self.round_tokens), self.max_round_tokens)
            for first_pass in (True, False):
                for part in self._queue:
                    if taken and tokens + part.tokens > budget:
                        break
                    if id(part) in requests or (first_pass and id(part.request) in requests):
                        continue
                    requests.update((id(part.request), id(part)))
                    taken.append(part)
                    tokens += part.tokens
            self._queue = deque(p for p in self._queue if id(p) not in requests)
            self._queued_tokens -= tokens
            self._gauges()
            return taken

    def _run(self) -> None:
        try:
            self._warm_up()
        except Exception:  # a model that cannot run one text: every request gets 503
            self.warm.set()
        trimmed = time.monotonic()
        while (parts := self._take()) is not None:
            try:
                live = self._drop_dead(parts)
                if live:
                    self._embed(live)
            except Exception:  # never lose the worker: the round's requests get 503
                for part in parts:
                    _settle(part.future, error=Unavailable("the computation failed"))
            if self.trim_heap and not self._queue and time.monotonic() - trimmed > 1.0:
                trim_heap()  # idle: give the heap the round left behind back to the OS
                trimmed = time.monotonic()

    def _drop_dead(self, parts: list[Part]) -> list[Part]:
        """Parts still wanted, marked running (their futures can no longer be cancelled)."""
        now = time.monotonic()
        live = []
        for part in parts:
            if part.request.cancelled or not part.future.set_running_or_notify_cancel():
                _settle(part.future, error=Dropped())
            elif part.request.deadline is not None and now > part.request.deadline:
                _settle(part.future, error=Expired())
            else:
                self.metrics.queue_seconds.observe(now - part.queued_at)
                live.append(part)
        return live

    def _embed(self, parts: list[Part]) -> None:
        """Attention parts one by one, the others in one embed call (see `_vectors`)."""
        for part in parts:
            if isinstance(part.plan, AttentionPlan):
                self._attention(part)
        vectors = [p for p in parts if not isinstance(p.plan, AttentionPlan)]
        if vectors:
            self._vectors(vectors)

    def _attention(self, part: Part) -> None:
        """One attention part's maps; a failure that is not the input's gets 503."""
        try:
            _settle(part.future, result=self.engine.attentions(part.records, part.plan))
        except BertlayersError as err:
            _settle(part.future, error=err)
        except Exception:
            self.engine.release_cached_memory()
            _settle(part.future, error=Unavailable("the computation failed"))

    def _vectors(self, parts: list[Part]) -> None:
        """One embed call for the parts; on a failure that is not the input's, each part is
        retried once in halves (less memory at once), and what fails again gets 503."""
        start = time.perf_counter()
        try:
            outcomes = self.engine.embed_jobs([(p.records, p.plan) for p in parts])
        except BertlayersError as err:  # not tied to one part: every part gets it
            for part in parts:
                _settle(part.future, error=err)
            return
        except Exception:
            self.engine.release_cached_memory()
            for part in parts:
                _settle(part.future, **self._retry_in_halves(part))
            return
        elapsed = time.perf_counter() - start
        tokens = sum(p.tokens for p in parts)
        self.metrics.inference_seconds.observe(elapsed)
        self.metrics.batch_texts.observe(sum(len(p.records) for p in parts))
        self.metrics.batch_tokens.observe(tokens)
        self.metrics.tokens.inc(tokens)
        self.rate = tokens / max(elapsed, 1e-9)
        self.metrics.tokens_per_second.set(self.rate)
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _settle(part.future, error=outcome)
            else:
                _settle(part.future, result=outcome)

    def _retry_in_halves(self, part: Part) -> dict:
        half = max(1, len(part.records) // 2)
        pieces = (
            [part.records[:half], part.records[half:]] if len(part.records) > 1 else [part.records]
        )
        results: list = []
        for piece in pieces:
            try:
                [outcome] = self.engine.embed_jobs([(piece, part.plan)])
            except Exception:
                self.engine.release_cached_memory()
                return {"error": Unavailable("the computation failed twice")}
            if isinstance(outcome, BaseException):
                return {"error": outcome}
            results.append(outcome)
        return {"result": concat_chunks(results)}


def _settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Give a part its outcome, unless it already has one (a client that went away)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
