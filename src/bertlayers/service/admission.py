"""Admission: what a request must pass before the worker embeds it, and the wait for it.

`Service` holds one app's engine, batcher, settings and metrics. A handler resolves its
request's options into a plan once (`plan`), checks the sizes (texts, characters, output
bytes, queued tokens), queues the records as parts (`run`) and waits for them, answering
408 past the deadline, 429 when the queue is full and 499 when the client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..chunks import SentenceChunk, concat_chunks
from ..core.attention import AttentionPlan
from ..core.config import AttentionConfig, ExtractConfig
from ..core.engine import Engine
from ..core.plan import Plan
from ..errors import BertlayersError
from ..io.readers import Record
from ..maps import AttentionMaps
from ..options import Level, LongMode
from .batcher import Batcher, Dropped, Expired, Part, QueueFull, Unavailable
from .batcher import Request as Pending
from .errors import ServiceError, library_error
from .metrics import Metrics
from .settings import ServeSettings

INLINE_CHARS = 16_384  # requests this small are counted on the event loop, not in a thread


class Service:
    """The state of one app: its engine (owned by the worker), batcher, settings, metrics."""

    def __init__(self, engine: Engine, settings: ServeSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = Metrics()
        batch_tokens = settings.batch_tokens
        self.batch_config = {} if batch_tokens is None else {"batch_tokens": batch_tokens}
        self.batcher = Batcher(
            engine,
            self.metrics,
            max_queue_tokens=settings.max_queue_tokens,
            round_tokens=settings.round_tokens,
            max_round_tokens=settings.max_round_tokens,
            max_wait_ms=settings.max_wait_ms,
            trim_heap=settings.trim_heap,
        )
        self.pipeline = engine.sentence_pipeline()
        self.name = settings.served_model_name or engine.info.name.removesuffix(" (bundled)")
        self.draining = False

    # ------------------------------------------------------------------ checks

    def plan(self, options: dict) -> Plan:
        """A request's options resolved against the model, once (422 naming the field)."""
        try:
            return self.engine.plan(ExtractConfig.from_dict({**options, **self.batch_config}))
        except BertlayersError as err:
            raise library_error(err, 422, options) from None

    def attention_plan(self, options: dict) -> AttentionPlan:
        """An attention request's options resolved against the model (422 naming the field)."""
        try:
            return self.engine.attention_plan(AttentionConfig.from_dict(options))
        except BertlayersError as err:
            raise library_error(err, 422, options) from None

    def require_ready(self) -> None:
        if self.draining:
            raise ServiceError(503, "the service is shutting down", "unavailable", code="draining")
        if not self.batcher.warm.is_set():
            raise ServiceError(
                503,
                "the model is loading",
                "unavailable",
                code="loading",
                headers={"Retry-After": "1"},
            )

    def check_sizes(self, texts: list[str]) -> None:
        s = self.settings
        if not texts:
            self.metrics.rejected.labels("empty").inc()
            raise ServiceError(422, "no texts to embed: send at least one", param="texts")
        if len(texts) > s.max_texts:
            self.metrics.rejected.labels("texts").inc()
            raise ServiceError(
                413,
                f"{len(texts)} texts, over the limit of {s.max_texts} per request (--max-texts)",
                param="texts",
                code="too_many_texts",
            )
        for i, text in enumerate(texts):
            if len(text) > s.max_chars:
                self.metrics.rejected.labels("chars").inc()
                raise ServiceError(
                    413,
                    f"text {i} has {len(text)} characters, over the limit of {s.max_chars} "
                    "(--max-chars)",
                    param="texts",
                    code="text_too_long",
                )

    def check_output(self, size: int) -> None:
        """Refuse a request whose output would be over `max_output_bytes` (413)."""
        if size > self.settings.max_output_bytes:
            self.metrics.rejected.labels("output_bytes").inc()
            raise ServiceError(
                413,
                f"the output would be {size} bytes, over the limit of "
                f"{self.settings.max_output_bytes} (--max-output-bytes): send fewer texts, "
                "fewer layers, or sentence level",
                param="texts",
                code="output_too_large",
            )

    async def token_counts(self, records: list[Record]) -> np.ndarray:
        """Each record's tokens (a small request on the event loop, a large one in a thread)."""
        try:
            if sum(len(r.text) + len(r.pair or "") for r in records) <= INLINE_CHARS:
                return self.engine.token_counts(records)  # well under a millisecond
            return await run_in_threadpool(self.engine.token_counts, records)
        except BertlayersError as err:
            raise library_error(err, 422, param="texts") from None

    # ------------------------------------------------------------------ running

    async def run(
        self, request: Request, records: list[Record], plan: Plan, timeout: float | None
    ) -> SentenceChunk:
        """Queue a request's records, wait for them, and give them back as one chunk."""
        counts = await self.token_counts(records)
        if plan.config.long is not LongMode.SPLIT:  # what runs is at most max_length per text
            counts = np.minimum(counts, plan.max_length)
        rows = len(counts) if plan.config.level is Level.SENTENCE else int(counts.sum())
        itemsize = np.dtype(plan.config.output_dtype.value).itemsize
        self.check_output(rows * int(np.prod(plan.row_shape)) * itemsize)
        return concat_chunks(await self.queue(request, records, counts, plan, timeout))

    async def attention(
        self,
        request: Request,
        records: list[Record],
        plan: AttentionPlan,
        itemsize: int,
        timeout: float | None,
    ) -> list[AttentionMaps]:
        """Queue a request's texts for their attention maps (whose bytes, `T²` per text,
        layer and head, count against the output limit) and give them back in order."""
        counts = await self.token_counts(records)
        # a text over the limit under long='error' is the route's 422, naming it
        if plan.config.long is not LongMode.ERROR or (counts <= plan.max_length).all():
            kept = np.minimum(counts, plan.max_length).astype(np.int64)
            self.check_output(int((kept**2).sum()) * len(plan.layers) * len(plan.heads) * itemsize)
        parts = await self.queue(request, records, counts, plan, timeout)
        return [maps for part in parts for maps in part]

    async def queue(
        self,
        request: Request,
        records: list[Record],
        counts: np.ndarray,
        plan: Plan | AttentionPlan,
        timeout: float | None,
    ) -> list:
        """Queue records as parts of at most a round each, wait, and give each part's result
        in order."""
        wait = self.settings.request_timeout if timeout is None else timeout
        pending = Pending(deadline=time.monotonic() + wait if wait else None)
        parts = [
            Part(records=chunk, plan=plan, tokens=tokens, request=pending)
            for chunk, tokens in self.batcher.split(records, counts)
        ]
        total = int(counts.sum())
        if total > self.settings.max_queue_tokens:
            self.metrics.rejected.labels("tokens").inc()
            raise ServiceError(
                413,
                f"the request has {total} tokens, over the queue's limit of "
                f"{self.settings.max_queue_tokens} (--max-queue-tokens): send fewer texts",
                param="texts",
                code="too_many_tokens",
            )
        try:
            self.batcher.submit(parts)
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise ServiceError(
                429,
                f"the queue is full ({self.settings.max_queue_tokens} tokens, "
                "--max-queue-tokens): retry later",
                "rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(self._retry_after())},
            ) from None
        except Unavailable as err:
            raise ServiceError(503, str(err), "unavailable", code="draining") from None
        waiter = asyncio.gather(*(asyncio.wrap_future(p.future) for p in parts))
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=0.1)
                if done:
                    break
                if await request.is_disconnected():
                    pending.cancelled = True
                    self.metrics.rejected.labels("disconnected").inc()
                    raise ServiceError(499, "the client went away", code="disconnected")
                late = pending.deadline is not None and time.monotonic() > pending.deadline
                if late and not any(p.future.running() or p.future.done() for p in parts):
                    for part in parts:  # none taken by the worker yet: none will be
                        part.future.cancel()
                    raise Expired
            results = waiter.result()
        except Expired:
            self.metrics.rejected.labels("deadline").inc()
            raise ServiceError(
                408,
                f"the request waited over its deadline of {wait} s before it could be computed",
                "timeout",
                param="timeout",
                code="deadline_exceeded",
            ) from None
        except Dropped:
            raise ServiceError(499, "the client went away", code="disconnected") from None
        except Unavailable as err:
            raise ServiceError(503, str(err), "unavailable", code="failed") from None
        except BertlayersError as err:
            raise library_error(err, 422, param="texts") from None
        finally:
            pending.cancelled = True  # parts of it still queued are not computed
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(BaseException):
                    await waiter
        return list(results)

    def _retry_after(self) -> int:
        _, tokens = self.batcher.queued()
        rate = self.batcher.rate or 1000.0
        return max(1, math.ceil(tokens / rate))
