"""HTTP errors of the service: one shape for every endpoint, nested under `"error"` as the
OpenAI API nests them (`message`, `type`, `param`, `code`), never a stack trace."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from ..errors import BertlayersError

FIELDS = {"output_dtype": "dtype"}  # library option -> request field, where they differ


class ServiceError(Exception):
    """An error answered with `status` and a one-line message naming the problem."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.message, self.kind, self.param, self.code, self.headers
        )


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def field_spelling(name: str, value: str | None) -> str:
    """How a request names an option: its field (`'layers'`, `'long': 'split'`)."""
    field = FIELDS.get(name, name)
    if value is None:
        return f"'{field}'"
    if value in ("True", "False"):
        return f"'{field}': {value.lower()}"
    return f"'{field}': '{value}'"


def library_error(
    err: BertlayersError, status: int, options: dict | None = None, param: str | None = None
) -> ServiceError:
    """A library error as the service answers it: its message in the request's field names,
    `param` the field it names (the first of `options` its message mentions)."""
    message = err.spelled(field_spelling)
    if param is None and options:
        template = err.template
        named = [
            n for n in options if f"{{opt:{n}" in template or f"'{FIELDS.get(n, n)}'" in message
        ]
        named = named or [n for n in options if n in message]
        param = (
            FIELDS.get(named[0], named[0]) if named else ("layers" if "layer" in message else None)
        )
    return ServiceError(status, message, param=param)
