"""RFC 9457 problem details: every refusal says what is wrong and where.

Domain refusals name their subject in the hall's terms ("window", "ticket"); here it becomes a
JSON pointer into the request: a path parameter of that name, else a field of the route's body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.domain.errors import DomainError

PROBLEM = "application/problem+json"
DOMAIN_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "forbidden": 403,
                 "closed": 409}
# The API's names for what the domain calls a subject, where they differ.
FIELD_NAMES = {"staff": "staff_id", "appointment": "code"}
HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not-found",
              405: "method-not-allowed", 413: "too-large", 429: "too-many-requests",
              503: "unavailable"}
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 408: "Request timeout", 409: "Conflict",
          413: "Content too large", 421: "Misdirected request",
          422: "Unprocessable content", 429: "Too many requests",
          500: "Internal error", 503: "Service unavailable", 504: "Gateway timeout"}


class Refusal(Exception):
    """An API-level refusal (not the domain's): stream cap, rate limits, body limit ..."""

    def __init__(self, status: int, code: str, detail: str, pointer: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.pointer, self.headers = pointer, headers


def body(status: int, code: str, title: str, detail: str, instance: str,
         errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": f"urn:hallbox:problem:{code}", "title": title,
                           "status": status, "detail": detail, "instance": instance}
    if errors:
        out["errors"] = errors
    return out


def problem(status: int, code: str, title: str, detail: str, instance: str,
            errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(status, code, title, detail, instance, errors),
                        status_code=status, media_type=PROBLEM, headers=headers)


def refusal_response(exc: Refusal, instance: str) -> JSONResponse:
    errors = [{"pointer": exc.pointer, "detail": exc.detail}] if exc.pointer else None
    return problem(exc.status, exc.code, exc.code.replace("-", " ").capitalize(), exc.detail,
                   instance, errors, exc.headers)


def _pointer(loc: tuple[Any, ...] | list[Any]) -> str:
    return "/" + "/".join(str(p) for p in loc)


def pointer_for(request: Request, subject: str | None) -> str | None:
    """Where in this request the domain's subject came from, if it came from it at all."""
    if subject is None:
        return None
    name = FIELD_NAMES.get(subject, subject)
    if name in request.path_params:
        return f"/path/{name}"
    if subject in request.path_params:
        return f"/path/{subject}"
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    for param in _all(dependant, "query_params"):
        if param.alias in (name, subject):
            return f"/query/{param.alias}"
    for param in _all(dependant, "body_params"):
        model = param.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for field in (name, subject):
                if field in model.model_fields:
                    return f"/body/{field}"
    return None


def _all(dependant: Any, kind: str) -> list[Any]:
    """A route's parameters of a kind, its dependencies' included."""
    if dependant is None:
        return []
    out = list(getattr(dependant, kind, []))
    for sub in getattr(dependant, "dependencies", []):
        out += _all(sub, kind)
    return out


def domain_problem(request: Request, exc: DomainError) -> JSONResponse:
    pointer = pointer_for(request, exc.subject)
    errors = [{"pointer": pointer, "detail": exc.detail}] if pointer else None
    return problem(DOMAIN_STATUS[exc.kind], exc.code, exc.code.replace("-", " ").capitalize(),
                   exc.detail, request.url.path, errors)


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
        return domain_problem(request, exc)

    @app.exception_handler(Refusal)
    async def _refusal(request: Request, exc: Refusal) -> JSONResponse:
        return refusal_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http-error")
        return problem(exc.status_code, code, code.replace("-", " ").capitalize(),
                       str(exc.detail), request.url.path,
                       headers=getattr(exc, "headers", None))
