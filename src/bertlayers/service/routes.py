"""The service's routes, each its own function: `/v1/embed` (any layers, level and pooling per
request), the OpenAI-compatible `/v1/embeddings`, `/v1/attention` (maps per layer and head),
`/v1/settings`, `/v1/info`, `/health`,
`/ready` and `/metrics`. Each resolves its request once into a plan and hands it to
`Service` (admission, the queue, the wait)."""

from __future__ import annotations

import dataclasses
import hmac

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..io.readers import records_from_texts
from .admission import Service
from .encoding import NPY, NPZ, to_base64
from .errors import ServiceError
from .responses import (
    attention_response,
    embed_response,
    json_response,
    normalized,
    request_records,
)
from .schemas import (
    AttentionRequest,
    AttentionResponse,
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


def current_service(request: Request) -> Service:
    """The app's `Service` (one per app: its engine, batcher, settings, metrics)."""
    return request.app.state.service


def authorized(request: Request) -> None:
    """Refuse a request without the API key the service was started with (401)."""
    service = current_service(request)
    key = service.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), key.encode()):
        service.metrics.rejected.labels("auth").inc()
        raise ServiceError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            "authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter()
guarded = [Depends(authorized)]


@router.post(
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
    service = current_service(request)
    service.require_ready()
    records, texts = request_records(body)
    service.check_sizes(texts)
    fields = ("layers", "level", "pooling", "word_pooling", "combine", "include_special")
    options = body.model_dump(include={*fields, "long", "max_length"})
    plan = service.plan({**options, "output_dtype": body.dtype})
    chunk = await service.run(request, records, plan, body.timeout)
    return embed_response(service.name, body, plan, chunk, request)


@router.post(
    "/v1/embeddings",
    response_model=OpenAIEmbeddingResponse,
    responses=ERRORS,
    dependencies=guarded,
    summary="OpenAI-compatible embeddings (the model's own pipeline by default)",
)
async def embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Response:
    """The model's sentence-transformers pipeline by default (its pooling, special tokens,
    length and normalization); `layers`, `pooling`, `combine`, `include_special` and
    `normalize` change it. The `bertlayers` field and `X-Bertlayers-*` headers say what was
    applied."""
    service = current_service(request)
    service.require_ready()
    engine, pipeline = service.engine, service.pipeline
    if body.model not in {service.name, engine.info.model_id, engine.info.name}:
        raise ServiceError(
            404,
            f"model '{body.model}' is not served here; this server serves '{service.name}'",
            param="model",
            code="model_not_found",
        )
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    service.check_sizes(texts)
    include_special = body.include_special
    if include_special is None:
        include_special = pipeline.include_special
    plan = service.plan(
        {
            "layers": -1 if body.layers is None else body.layers,
            "pooling": body.pooling or pipeline.pooling,
            "combine": body.combine or "stack",
            "include_special": include_special,
            "max_length": pipeline.max_length,
        }
    )
    k, h = plan.row_shape
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
    chunk = await service.run(request, list(records_from_texts(texts)), plan, None)
    vectors = np.asarray(chunk.vectors)[:, 0]  # (N, H)
    if body.dimensions is not None:
        vectors = vectors[:, : body.dimensions]
    normalize = pipeline.normalize if body.normalize is None else body.normalize
    if normalize:
        vectors = normalized(vectors)
    if body.encoding_format == "base64":
        data = [to_base64(v, "float32") for v in vectors]
    else:
        data = list(vectors)
    tokens = int(np.sum(chunk.n_tokens))
    applied = {
        "layers": list(plan.layers),
        "combine": plan.config.combine.value,
        "pooling": plan.config.pooling.value,
        "include_special": plan.config.include_special,
        "normalize": normalize,
        "max_length": plan.max_length,
        "source": "request" if _overridden(body) else pipeline.source,
    }
    return json_response(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data)
            ],
            "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "bertlayers": applied,
        },
        headers={
            "X-Bertlayers-Layers": ",".join(map(str, plan.layers)),
            "X-Bertlayers-Pooling": plan.config.pooling.value,
            "X-Bertlayers-Include-Special": str(plan.config.include_special).lower(),
            "X-Bertlayers-Normalize": str(normalize).lower(),
        },
    )


def _overridden(body: OpenAIEmbeddingRequest) -> bool:
    fields = ("layers", "pooling", "combine", "include_special", "normalize")
    return any(getattr(body, name) is not None for name in fields)


@router.post(
    "/v1/attention",
    response_model=AttentionResponse,
    responses={
        **ERRORS,
        200: {"content": {NPZ: {}}, "description": "JSON, or .npz with `Accept`"},
    },
    dependencies=guarded,
    summary="Attention maps per layer and head (eager attention, as output_attentions)",
)
async def attention(body: AttentionRequest, request: Request) -> Response:
    """Maps `(K, A, T, T)` per text for the layers (1..L) and heads asked for, tokens or
    words, weights or norm-based. Maps grow as T² per head and layer: their bytes count
    against the output limit, and a request over it gets 413."""
    service = current_service(request)
    service.require_ready()
    records, texts = request_records(body)
    service.check_sizes(texts)
    fields = ("layers", "heads", "level", "long", "max_tokens", "norms")
    plan = service.attention_plan(body.model_dump(include=set(fields)))
    itemsize = 2 if body.dtype == "float16" else 4
    maps = await service.attention(request, records, plan, itemsize, body.timeout)
    return attention_response(service.name, body, plan, maps, request)


@router.get("/v1/info", response_model=Info, responses=ERRORS, dependencies=guarded)
async def info(request: Request) -> Info:
    """The model, its fingerprint and layers, and the limits of this service."""
    service = current_service(request)
    engine, pipeline = service.engine, service.pipeline
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
        device=engine.run_info.device,
        compute_dtype=engine.run_info.compute,
        model_info=dataclasses.asdict(i),
        sentence_pipeline={
            "pooling": pipeline.pooling.value,
            "include_special": pipeline.include_special,
            "max_length": pipeline.max_length,
            "normalize": pipeline.normalize,
            "source": pipeline.source,
            "exact": pipeline.exact,
            "unsupported": list(pipeline.unsupported),
        },
        limits=service.settings.limits(),
        version=__version__,
    )


@router.post(
    "/v1/settings", response_model=SettingsResponse, responses=ERRORS, dependencies=guarded
)
async def resolved_settings(body: SettingsRequest, request: Request) -> SettingsResponse:
    """What `/v1/embed` options resolve to (layers, max length, windows), as recorded in a
    store's provenance: `bertlayers extract --server` writes them."""
    options = body.model_dump()
    options["output_dtype"] = options.pop("dtype")
    return SettingsResponse(settings=current_service(request).plan(options).settings())


@router.get("/health", summary="The process is up (no key needed)")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
async def ready(request: Request) -> Response:
    """True after a warm-up forward pass; false while loading or shutting down (no key
    needed, for probes)."""
    service = current_service(request)
    if service.draining:
        return JSONResponse({"ready": False, "status": "draining"}, status_code=503)
    if not service.batcher.warm.is_set():
        return JSONResponse({"ready": False, "status": "loading"}, status_code=503)
    return JSONResponse({"ready": True, "status": "ready"})


@router.get("/metrics", dependencies=guarded, response_class=Response, responses=ERRORS)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = current_service(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
