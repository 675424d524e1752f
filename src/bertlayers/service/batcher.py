"""Dynamic batching across requests: one worker thread owns the `Engine` and embeds what
every request queued, together.

Each request's records become one or more parts (a large request is cut into parts of at
most `round_tokens` tokens, so others interleave with it). The worker takes parts from the
front of the queue up to `round_tokens` and embeds them in one `Engine.embed_many` call:
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

from ..core.config import ExtractConfig
from ..core.engine import Engine
from ..errors import BertlayersError
from ..io.readers import Record
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


@dataclass
class Part:
    records: list[Record]
    config: ExtractConfig
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
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_queue_tokens = max_queue_tokens
        self.round_tokens = round_tokens
        self.max_wait = max_wait_ms / 1000
        self._queue: deque[Part] = deque()
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.warm = threading.Event()

    # ------------------------------------------------------------------ requests

    def split(
        self, records: Sequence[Record], counts: Sequence[int], config: ExtractConfig
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
        self.engine.embed_many(
            [([Record(id="warm-up", text="warm up")], ExtractConfig(layers="all"))]
        )
        self.warm.set()

    def _take(self) -> list[Part] | None:
        """The next parts to embed, up to `round_tokens` (one at least); None to stop."""
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
            while self._queue and (
                not taken or tokens + self._queue[0].tokens <= self.round_tokens
            ):
                part = self._queue.popleft()
                taken.append(part)
                tokens += part.tokens
            self._queued_tokens -= tokens
            self._gauges()
            return taken

    def _run(self) -> None:
        try:
            self._warm_up()
        except Exception:  # a model that cannot run one text: every request gets 503
            self.warm.set()
        while (parts := self._take()) is not None:
            live = self._drop_dead(parts)
            if live:
                self._embed(live)

    def _drop_dead(self, parts: list[Part]) -> list[Part]:
        now = time.monotonic()
        live = []
        for part in parts:
            if part.request.cancelled:
                part.future.set_exception(Dropped())
            elif part.request.deadline is not None and now > part.request.deadline:
                part.future.set_exception(Expired())
            else:
                self.metrics.queue_seconds.observe(now - part.queued_at)
                live.append(part)
        return live

    def _embed(self, parts: list[Part], retry: bool = True) -> None:
        start = time.perf_counter()
        try:
            outcomes = self.engine.embed_many([(p.records, p.config) for p in parts])
        except BertlayersError as err:  # not tied to one part: every part gets it
            for part in parts:
                part.future.set_exception(err)
            return
        except Exception:
            if not retry:
                for part in parts:
                    part.future.set_exception(Unavailable("the computation failed"))
                return
            if len(parts) == 1:
                self._embed(parts, retry=False)
                return
            half = len(parts) // 2
            self._embed(parts[:half], retry=False)
            self._embed(parts[half:], retry=False)
            return
        elapsed = time.perf_counter() - start
        tokens = sum(p.tokens for p in parts)
        self.metrics.inference_seconds.observe(elapsed)
        self.metrics.batch_texts.observe(sum(len(p.records) for p in parts))
        self.metrics.batch_tokens.observe(tokens)
        self.metrics.tokens.inc(tokens)
        self.metrics.tokens_per_second.set(tokens / max(elapsed, 1e-9))
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                part.future.set_exception(outcome)
            else:
                part.future.set_result(outcome)
