"""`bertlayers serve`: an HTTP service that returns any layer, with batching across requests.

`create_app(engine, settings)` builds the FastAPI app around a loaded `Engine`;
`bertlayers serve` (`service.cli`) runs it under uvicorn. Needs the `serve` extra.
"""

from __future__ import annotations

from ..extras import require

require("fastapi", "serve", "bertlayers serve")
require("uvicorn", "serve", "bertlayers serve")

from .app import create_app  # noqa: E402
from .settings import ServeSettings  # noqa: E402

__all__ = ["ServeSettings", "create_app"]
