"""RFC 9457 problem details: every refusal says what is wrong and where."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.domain.errors import DomainError

PROBLEM = "application/problem+json"
_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "forbidden": 403, "closed": 409}


def problem(status: int, code: str, title: str, detail: str, instance: str,
            errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": f"urn:hallbox:problem:{code}", "title": title,
                            "status": status, "detail": detail, "instance": instance}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _pointer(loc: tuple[Any, ...] | list[Any]) -> str:
    return "/" + "/".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"pointer": _pointer(e.get("loc", ())), "detail": e.get("msg", "invalid")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"pointer": "/", "detail": "invalid"}
        return problem(422, "validation", "Invalid request",
                       f"{first['pointer']}: {first['detail']}"
                       + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                       request.url.path, errors)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        errors = [{"pointer": exc.pointer, "detail": exc.detail}] if exc.pointer else None
        return problem(_STATUS[exc.kind], exc.code, exc.code.replace("-", " ").capitalize(),
                       exc.detail, request.url.path, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 403: "forbidden", 404: "not-found",
                405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(exc.status_code, code, code.replace("-", " ").capitalize(),
                       str(exc.detail), request.url.path,
                       headers=getattr(exc, "headers", None))
