"""Error answers: every client mistake becomes a 4xx whose message says what is wrong."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import SearchUnavailable
from .resources import NotReady
from .schemas import NOT_BLANK, Problem

log = logging.getLogger(__name__)

# The standard responses routes document besides their own.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "The server needs its read key (TVR_READ_API_KEY) and got none."},
    503: {
        "model": Problem,
        "description": "Not ready (the encoder, catalog or index is loading or missing), or no answer in time.",
    },
}


def _where(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        return ".".join(parts[1:]) or parts[0]
    if parts and parts[0] == "body":
        return "request body" + ("" if len(parts) == 1 else ": " + ".".join(parts[1:]))
    return ".".join(parts)


def describe(error: dict[str, Any]) -> str:
    """One sentence for one pydantic error."""
    where, kind, ctx = _where(error.get("loc", ())), error.get("type", ""), error.get("ctx") or {}
    if kind == "invalid":  # the service's own checks (search_params.invalid): the message is whole
        return str(error.get("msg", "invalid"))
    if kind == "missing":
        return f"{where} is required"
    if kind == "json_invalid":
        return f"the request body is not valid JSON ({ctx.get('error', 'malformed')})"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NOT_BLANK:
        return f"{where} must not be empty or only spaces"
    if kind == "string_too_short":
        return f"{where} must not be empty"
    if kind == "string_too_long":
        return f"{where} is too long: at most {ctx.get('max_length')} characters"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{where} is out of range: {error.get('msg', '').lower()}, got {error.get('input')!r}"
    return f"{where}: {error.get('msg', 'invalid')} (got {error.get('input')!r})"


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    message = "; ".join(describe(e) for e in errors[:5]) or "invalid request"
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors), "message": message})


async def not_ready(_: Request, exc: NotReady) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": f"not ready: {exc}"}, headers={"Retry-After": "5"})


async def search_unavailable(_: Request, exc: SearchUnavailable) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})


def allowed_methods(request: Request) -> list[str]:
    """Methods the OpenAPI schema lists for the request's path (Starlette's 405 names one route's only)."""
    patterns = getattr(request.app.state, "method_patterns", None)
    if patterns is None:
        patterns = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"), sorted(m.upper() for m in ops))
            for path, ops in request.app.openapi()["paths"].items()
        ]
        request.app.state.method_patterns = patterns
    return sorted({m for pattern, methods in patterns if pattern.match(request.url.path) for m in methods})


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "the request body cannot be read: expected JSON text in UTF-8"
    elif exc.status_code == 404 and detail == "Not Found":
        detail = "no such route (see /docs for the API)"
    elif exc.status_code == 405:
        allow = allowed_methods(request) or [m.strip() for m in headers.get("Allow", "GET").split(",")]
        headers["Allow"] = ", ".join(allow)
        detail = f"method {request.method} not allowed here: use {' or '.join(allow)} (see /docs for the API)"
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=headers or None)


async def catalog_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
    log.error("catalog error on %s %s: %s", request.method, request.url.path, exc.orig)
    return JSONResponse(
        status_code=503,
        content={"detail": "the catalog database is unavailable; try again"},
        headers={"Retry-After": "5"},
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(status_code=500, content={"detail": "internal error (see the server log)"})


def install(app: FastAPI) -> None:
    # Starlette types a handler as taking any Exception; each of these takes the class it is registered for.
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(NotReady, not_ready)  # type: ignore[arg-type]
    app.add_exception_handler(SearchUnavailable, search_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, catalog_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)
