"""OpenAI's error objects: `{"error": {"message", "type", "param", "code"}}` with the matching status.

Routes raise `APIError`; `install_handlers` turns it, FastAPI's request validation errors and
unknown routes into that shape, so the `openai` client raises its usual exception classes
(`AuthenticationError` for 401, `NotFoundError` for 404, `BadRequestError` for 400…).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("plw.serve")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error"}


_TYPE_TAGS = {"float", "int", "str", "bool", "none", "dict", "list"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error")

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code, type=self.type)


def error_response(status: int, message: str, *, param=None, code=None, type=None, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": type or _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def not_found(kind: str, object_id: str, param: str | None = None) -> APIError:
    """Unknown and other projects' ids answer alike, so ids leak nothing across projects."""
    return APIError(404, f"No such {kind}: {object_id!r}", param=param, code=f"{kind}_not_found")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, err: APIError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        # Union members add their type name to the location ("literal['auto']", "float"): keep real keys.
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "form")
               and not str(p).startswith(("literal[", "function-")) and p not in _TYPE_TAGS]
        param = ".".join(loc) or None
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error_response(400, f"{param}: {msg}" if param else msg, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, err: StarletteHTTPException):
        message = err.detail if isinstance(err.detail, str) else "request failed"
        if err.status_code == 404 and message == "Not Found":
            message = "Unknown request URL. Please check the URL for typos."
        return error_response(err.status_code, message, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(_request: Request, err: Exception):
        log.exception("internal error")
        return error_response(500, "The server had an error while processing your request.")
