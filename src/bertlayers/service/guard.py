"""The ASGI guard in front of the app: every request counted in the metrics, and a body over
`max_body_bytes` refused with 413 (by its Content-Length, or as it is read) before the app
reads it."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .metrics import Metrics


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
    "/v1/attention",
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
