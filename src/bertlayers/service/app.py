"""The FastAPI app: `/v1/embed` (any layers, level and pooling per request), the
OpenAI-compatible `/v1/embeddings`, `/v1/info`, `/health`, `/ready` and `/metrics`.

Handlers validate a request, count its tokens, check the limits and queue it; the worker
thread of `batcher.py` (the only user of the `Engine`) embeds it with whatever else is
queued. Every error is one line nested under `"error"`, never a stack trace; request bodies
are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..core.config import ExtractConfig
from ..core.engine import Engine, RecordVectors
from ..errors import BertlayersError, OptionError
from ..io.readers import Record, records_from_texts, records_from_words
from ..layers import resolve_layers
from ..options import Level, LongMode
from .batcher import Batcher, Dropped, Expired, Part, QueueFull, Unavailable
from .batcher import Request as Pending
from .encoding import NPY, NPZ, npy_bytes, npz_bytes, to_base64, wants
from .errors import ServiceError, error_response
from .metrics import Metrics
from .schemas import (
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    Info,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    Ready,
    SettingsRequest,
    SettingsResponse,
)
from .settings import ServeSettings

log = logging.getLogger("bertlayers.service")
INLINE_CHARS = 16_384  # requests this small are counted on the event loop, not in a thread

ERRORS = {
    status: {"model": ErrorResponse, "description": what}
    for status, what in {
        401: "Missing or wrong API key",
        404: "Unknown model",
        408: "The request's deadline passed before it was computed",
        413: "Over a size limit (texts, characters, body or output bytes)",
        422: "Invalid field or input",
        429: "The queue is full: retry after `Retry-After` seconds",
        503: "Loading, shutting down, or the computation failed twice",
    }.items()
}


def _json(content: object, status: int = 200, headers: dict | None = None) -> Response:
    """JSON written by orjson: numpy arrays go out without a Python float per value."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


# ---------------------------------------------------------------- the ASGI guard


class Guard:
    """Counts each request in the metrics and refuses a body over `max_body_bytes` (by its
    Content-Length, or as it is read) with 413, before the app sees it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_PATHS else "other"
        status = {"code": 500}

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                receive = await self._bounded_body(scope, receive, counted_send)
                if receive is None:
                    return
            await self.app(scope, receive, counted_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - start)

    async def _bounded_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the whole body (at most the limit) and replay it; None when refused."""
        limit = self.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, send, limit)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # gone mid-body: nothing to answer
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._too_large(scope, send, limit)
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, scope: Scope, send: Send, limit: int) -> None:
        self.metrics.rejected.labels("body_bytes").inc()
        response = error_response(
            413,
            f"request body over the limit of {limit} bytes (--max-body-bytes)",
            param="body",
            code="body_too_large",
        )
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


KNOWN_PATHS = {
    "/v1/embed",
    "/v1/embeddings",
    "/v1/info",
    "/v1/settings",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
}


# ---------------------------------------------------------------- the service


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
            max_wait_ms=settings.max_wait_ms,
            trim_heap=settings.trim_heap,
        )
        self.pipeline = engine.sentence_pipeline()
        self.name = settings.served_model_name or engine.info.name.removesuffix(" (bundled)")
        self.draining = False

    # ------------------------------------------------------------------ checks

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

    def check_output(self, config: ExtractConfig, counts: np.ndarray) -> None:
        selection = resolve_layers(config.layers, self.engine.info.num_layers)
        k, h = self.engine.output_shape(config, selection)
        rows = len(counts) if config.level is Level.SENTENCE else int(counts.sum())
        size = rows * k * h * np.dtype(config.output_dtype.value).itemsize
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

    # ------------------------------------------------------------------ running

    async def run(
        self, request: Request, records: list[Record], config: ExtractConfig, timeout: float | None
    ) -> list[RecordVectors]:
        """Queue a request's records, wait for them, and give them back in order."""
        try:
            if sum(len(r.text) + len(r.pair or "") for r in records) <= INLINE_CHARS:
                counts = self.engine.token_counts(records)  # well under a millisecond
            else:
                counts = await run_in_threadpool(self.engine.token_counts, records)
        except BertlayersError as err:
            raise ServiceError(422, str(err), param="texts") from None
        if config.long is not LongMode.SPLIT:  # what runs is at most max_length per text
            counts = np.minimum(counts, self.engine.settings(config)["max_length"])
        self.check_output(config, counts)
        wait = self.settings.request_timeout if timeout is None else timeout
        pending = Pending(deadline=time.monotonic() + wait if wait else None)
        parts = [
            Part(records=chunk, config=config, tokens=tokens, request=pending)
            for chunk, tokens in self.batcher.split(records, counts, config)
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
            raise ServiceError(422, str(err), param="texts") from None
        finally:
            pending.cancelled = True  # parts of it still queued are not computed
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(BaseException):
                    await waiter
        return [vectors for part in results for vectors in part]

    def _retry_after(self) -> int:
        _, tokens = self.batcher.queued()
        rate = self.batcher.rate or 1000.0
        return max(1, math.ceil(tokens / rate))


def _config(options: dict) -> ExtractConfig:
    try:
        return ExtractConfig.from_options(**options)
    except OptionError as err:
        raise ServiceError(422, str(err), param=_param_of(str(err), options)) from None


def _param_of(message: str, options: dict) -> str | None:
    for name in options:
        if name in message:
            return name
    return "layers" if "layer" in message else None


def _normalized(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array.astype(np.float32), axis=-1, keepdims=True)
    return (array / np.maximum(norms, 1e-12)).astype(array.dtype)


# ---------------------------------------------------------------- the app


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The service's app around a loaded `Engine` (its worker starts with the app)."""
    settings = settings or ServeSettings()
    service = Service(engine, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        yield
        service.draining = True
        await run_in_threadpool(service.batcher.stop, settings.grace_seconds)

    app = FastAPI(
        title="bertlayers",
        version=__version__,
        summary="Embeddings from any layer of a BERT-family model, chosen per request.",
        lifespan=lifespan,
    )
    app.state.service = service
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
        )
    app.add_middleware(Guard, metrics=service.metrics, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, err: ServiceError) -> Response:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        service.metrics.rejected.labels("invalid").inc()
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(where) or None
        if first.get("type") == "json_invalid":
            message = "the body is not valid JSON"
            param = "body"
        elif param:
            message = f"field '{param}': {first.get('msg')}"
        else:
            message = "the body must be a JSON object of this endpoint's fields"
            param = "body"
        return error_response(422, message, param=param, code=str(first.get("type")))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        if err.status_code == 400:  # FastAPI could not decode the body
            service.metrics.rejected.labels("invalid").inc()
            return error_response(
                422, "the body is not valid JSON in UTF-8", param="body", code="json_invalid"
            )
        return error_response(err.status_code, str(err.detail), headers=err.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception) -> Response:
        log.error("internal error on %s: %s", request.url.path, type(err).__name__, exc_info=err)
        return error_response(500, "internal error", "server_error")

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), settings.api_key.encode()
        ):
            service.metrics.rejected.labels("auth").inc()
            raise ServiceError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(authorized)]

    # ------------------------------------------------------------------ /v1/embed

    @app.post(
        "/v1/embed",
        response_model=EmbedResponse,
        responses={
            **ERRORS,
            200: {
                "content": {NPY: {}, NPZ: {}},
                "description": "JSON, or .npy (sentence level) / .npz with `Accept`",
            },
        },
        dependencies=guarded,
        summary="Embed texts with any layers, level and pooling",
    )
    async def embed(body: EmbedRequest, request: Request) -> Response:
        service.require_ready()
        records, texts = _embed_records(body)
        service.check_sizes(texts)
        options = {
            "layers": body.layers,
            "level": body.level,
            "pooling": body.pooling,
            "word_pooling": body.word_pooling,
            "combine": body.combine,
            "include_special": body.include_special,
            "long": body.long,
            "max_length": body.max_length,
            "output_dtype": body.dtype,
            **service.batch_config,
        }
        config = _config(options)
        selection = _selection(service, config)
        results = await service.run(request, records, config, body.timeout)
        return _embed_response(service, body, config, selection, results, request)

    # ------------------------------------------------------------------ /v1/embeddings

    @app.post(
        "/v1/embeddings",
        response_model=OpenAIEmbeddingResponse,
        responses=ERRORS,
        dependencies=guarded,
        summary="OpenAI-compatible embeddings (the model's own pipeline by default)",
    )
    async def embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Response:
        service.require_ready()
        known = {service.name, engine.info.model_id, engine.info.name}
        if body.model not in known:
            raise ServiceError(
                404,
                f"model '{body.model}' is not served here; this server serves '{service.name}'",
                param="model",
                code="model_not_found",
            )
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        service.check_sizes(texts)
        pipeline = service.pipeline
        options = {
            "layers": -1 if body.layers is None else body.layers,
            "pooling": body.pooling or pipeline.pooling,
            "combine": body.combine or "stack",
            "include_special": pipeline.include_special
            if body.include_special is None
            else body.include_special,
            "max_length": pipeline.max_length,
            **service.batch_config,
        }
        config = _config(options)
        selection = _selection(service, config)
        k, h = engine.output_shape(config, selection)
        if k != 1:
            raise ServiceError(
                422,
                f"{k} layers asked for: this endpoint returns one vector per text, so choose "
                "one layer or a combine (mean, sum, concat)",
                param="layers",
            )
        if body.dimensions is not None and body.dimensions > h:
            raise ServiceError(
                422,
                f"dimensions {body.dimensions} is over this output's {h} values",
                param="dimensions",
            )
        records = list(records_from_texts(texts))
        results = await service.run(request, records, config, None)
        vectors = np.stack([r.vectors[0] for r in results])  # (N, H)
        if body.dimensions is not None:
            vectors = vectors[:, : body.dimensions]
        normalize = pipeline.normalize if body.normalize is None else body.normalize
        if normalize:
            vectors = _normalized(vectors)
        if body.encoding_format == "base64":
            data = [
                {"object": "embedding", "index": i, "embedding": to_base64(v, "float32")}
                for i, v in enumerate(vectors)
            ]
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ]
        tokens = sum(r.n_tokens for r in results)
        return _json(
            {
                "object": "list",
                "data": data,
                "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # ------------------------------------------------------------------ the rest

    @app.get("/v1/info", response_model=Info, responses=ERRORS, dependencies=guarded)
    async def info() -> Info:
        """The model, its fingerprint and layers, and the limits of this service."""
        i = engine.info
        return Info(
            model=i.model_id,
            served_model_name=service.name,
            fingerprint=engine.fingerprint,
            architecture=i.architecture,
            num_layers=i.num_layers,
            layers=list(range(i.num_layers + 1)),
            hidden_size=i.hidden_size,
            max_length=i.max_length,
            runtime=engine.runtime.value,
            device=str(engine.encoder.device),
            compute_dtype=engine.encoder.compute,
            model_info=dataclasses.asdict(i),
            sentence_pipeline={
                "pooling": service.pipeline.pooling.value,
                "include_special": service.pipeline.include_special,
                "max_length": service.pipeline.max_length,
                "normalize": service.pipeline.normalize,
                "source": service.pipeline.source,
                "exact": service.pipeline.exact,
                "unsupported": list(service.pipeline.unsupported),
            },
            limits=settings.limits(),
            version=__version__,
        )

    @app.post(
        "/v1/settings", response_model=SettingsResponse, responses=ERRORS, dependencies=guarded
    )
    async def resolved_settings(body: SettingsRequest) -> SettingsResponse:
        """What `/v1/embed` options resolve to (layers, max length, windows), as recorded in
        a store's provenance: `bertlayers extract --server` writes them."""
        options = body.model_dump()
        options["output_dtype"] = options.pop("dtype")
        config = _config(options)
        _selection(service, config)
        return SettingsResponse(settings=engine.settings(config))

    @app.get("/health", summary="The process is up (no key needed)")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
    async def ready() -> Response:
        """True after a warm-up forward pass; false while loading or shutting down (no key
        needed, for probes)."""
        if service.draining:
            return JSONResponse({"ready": False, "status": "draining"}, status_code=503)
        if not service.batcher.warm.is_set():
            return JSONResponse({"ready": False, "status": "loading"}, status_code=503)
        return JSONResponse({"ready": True, "status": "ready"})

    @app.get("/metrics", dependencies=guarded, response_class=Response, responses=ERRORS)
    async def metrics() -> Response:
        """Prometheus metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _selection(service: Service, config: ExtractConfig):
    try:
        selection = resolve_layers(config.layers, service.engine.info.num_layers)
        service.engine.settings(config)  # max_length and stride against the model
    except OptionError as err:
        raise ServiceError(422, str(err), param=_param_of(str(err), {"layers": 1})) from None
    return selection


def _embed_records(body: EmbedRequest) -> tuple[list[Record], list[str]]:
    if (body.texts is None) == (body.words is None):
        raise ServiceError(422, "send either 'texts' or 'words'", param="texts")
    try:
        if body.words is not None:
            if body.pairs is not None:
                raise ServiceError(422, "'pairs' go with 'texts', not 'words'", param="pairs")
            records = list(records_from_words(body.words))
            return records, [r.text for r in records]
        if body.pairs is not None and len(body.pairs) != len(body.texts or []):
            raise ServiceError(
                422,
                f"{len(body.pairs)} pairs for {len(body.texts or [])} texts: send one each",
                param="pairs",
            )
        records = list(records_from_texts(body.texts or [], body.pairs))
    except BertlayersError as err:
        raise ServiceError(422, str(err), param="texts") from None
    return records, list(body.texts or [])


def _embed_response(
    service: Service,
    body: EmbedRequest,
    config: ExtractConfig,
    selection,
    results: list[RecordVectors],
    request: Request,
) -> Response:
    sentence = config.level is Level.SENTENCE
    k, h = service.engine.output_shape(config, selection)
    dtype = body.dtype
    if sentence:
        flat = np.stack([r.vectors for r in results]).astype(dtype, copy=False)
        offsets = None
    else:
        lengths = [len(r.vectors) for r in results]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = (
            np.concatenate([r.vectors for r in results])
            if sum(lengths)
            else np.zeros((0, k, h), dtype)
        ).astype(dtype, copy=False)
    if body.normalize:
        flat = _normalized(flat)
    layers = list(selection.indices)
    n_tokens = np.array([r.n_tokens for r in results], dtype=np.int64)
    truncated = np.array([r.truncated for r in results], dtype=bool)
    windows = np.array([r.windows for r in results], dtype=np.int64)
    kind = wants(request.headers.get("accept"))
    meta = {
        "X-Bertlayers-Layers": ",".join(map(str, layers)),
        "X-Bertlayers-Level": config.level.value,
        "X-Bertlayers-Tokens": str(int(n_tokens.sum())),
    }
    if kind == NPY:
        if not sentence:
            raise ServiceError(
                406, "token and word output is ragged: ask for application/x-npz", param="accept"
            )
        return Response(npy_bytes(flat), media_type=NPY, headers=meta)
    if kind == NPZ:
        arrays = {
            "embeddings": flat,
            "layers": np.array(layers, dtype=np.int64),
            "n_tokens": n_tokens,
            "truncated": truncated,
            "windows": windows,
        }
        if not sentence:
            arrays["offsets"] = offsets
            arrays["items"] = np.array([x for r in results for x in r.items or []], dtype=str)
            arrays["spans"] = (
                np.concatenate([r.spans for r in results])
                if len(flat)
                else np.zeros((0, 2), np.int64)
            )
        return Response(npz_bytes(arrays), media_type=NPZ, headers=meta)
    texts = []
    name = "tokens" if config.level is Level.TOKEN else "words"
    for r in results:
        entry: dict = {"n_tokens": r.n_tokens, "truncated": r.truncated, "windows": r.windows}
        if not sentence:
            entry[name] = r.items
            entry["spans"] = r.spans
        texts.append(entry)
    if body.encoding == "base64":
        embeddings: object = to_base64(flat, dtype)
    elif sentence:
        embeddings = flat.astype(np.float32)
    else:
        embeddings = [flat[a:b].astype(np.float32) for a, b in itertools.pairwise(offsets)]
    tokens = int(n_tokens.sum())
    return _json(
        {
            "object": "embeddings",
            "model": service.name,
            "level": config.level.value,
            "layers": layers,
            "combine": config.combine.value,
            "shape": list(flat.shape),
            "dtype": dtype,
            "encoding": body.encoding,
            "offsets": offsets,
            "embeddings": embeddings,
            "texts": texts,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
