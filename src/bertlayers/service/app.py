"""The FastAPI app around a loaded `Engine`: the routes (`routes.py`), the ASGI guard in
front of them (`guard.py`), and one error shape for every failure.

Handlers validate a request, resolve it into a plan, check the limits and queue it
(`admission.py`); the worker thread of `batcher.py` (the only user of the `Engine`) embeds
it with whatever else is queued. Every error is one line nested under `"error"`, never a
stack trace; request bodies are never logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..core.engine import Engine
from .admission import Service
from .errors import ServiceError, error_response
from .guard import Guard
from .routes import router
from .settings import ServeSettings

log = logging.getLogger("bertlayers.service")


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
    _add_error_handlers(app, service)
    app.include_router(router)
    return app


def _add_error_handlers(app: FastAPI, service: Service) -> None:
    """Every failure in the one error shape: ours, validation, HTTP, and anything else."""

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
