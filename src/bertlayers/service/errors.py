"""HTTP errors of the service: one shape for every endpoint, nested under `"error"` as the
OpenAI API nests them (`message`, `type`, `param`, `code`), never a stack trace."""

from __future__ import annotations

from fastapi.responses import JSONResponse


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
