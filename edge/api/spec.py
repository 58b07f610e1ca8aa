"""The OpenAPI spec says what the API really answers: the bearer scheme, the roles of each
operation (from its `Roles` dependency, the same object that enforces them), and every refusal
as application/problem+json with the Problem schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from edge.api.auth import Roles
from edge.api.problems import PROBLEM, TITLES

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "description": "urn:hallbox:problem:{code}"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request path"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["pointer", "detail"],
            "properties": {"pointer": {"type": "string",
                                       "description": "JSON pointer into the request: "
                                                      "/body/..., /path/..., /query/..., "
                                                      "/header/..."},
                           "detail": {"type": "string"}}}},
    },
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: these statuses answer problem+json."""
    return {s: {"description": TITLES.get(s, "Refused"),
                "content": {PROBLEM: {"schema": PROBLEM_REF}}} for s in statuses}


def _roles(dep: Dependant) -> Roles | None:
    declared = getattr(dep.call, "roles", None)  # edge.api.auth.declares
    if isinstance(declared, Roles):
        return declared
    if isinstance(dep.call, Roles):
        return dep.call
    for sub in dep.dependencies:
        found = _roles(sub)
        if found is not None:
            return found
    return None


def _has_input(dep: Dependant) -> bool:
    return bool(dep.path_params or dep.query_params or dep.header_params or dep.body_params
                or any(_has_input(d) for d in dep.dependencies))


def install(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Document `routers`' operations (their routes as declared, with their dependencies)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                           description=app.description, routes=app.routes)
        comps = spec.setdefault("components", {})
        comps.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer",
            "description": "A config token (kiosk, manager, central) or a staff session token "
                           "from POST /api/v1/sessions. The live streams also take ?token= "
                           "(EventSource cannot send headers)."}
        schemas = comps.setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods or ():
                op = spec["paths"].get(route.path_format, {}).get(method.lower())
                if op is not None:
                    _document(op, route)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _document(op: dict[str, Any], route: APIRoute) -> None:
    roles = _roles(route.dependant)
    responses: dict[str, Any] = op.setdefault("responses", {})
    add: set[int] = set()
    if roles is None:
        op["x-roles"] = ["anonymous"]
        op["security"] = []
        note = "Anyone on the hall LAN may call this."
    elif roles.anonymous:
        op["x-roles"] = ["anonymous", *roles.roles]
        op["security"] = [{}, {"bearer": []}]
        note = f"Anyone; some requests need a token of role {', '.join(roles.roles)}."
    else:
        op["x-roles"] = list(roles.roles)
        op["security"] = [{"bearer": []}]
        note = f"Roles: {', '.join(roles.roles)}."
        add |= {401, 403}
    if _has_input(route.dependant):
        add.add(422)
    if route.dependant.body_params:
        add.add(413)  # edge.api.limits.LanGate, before parsing
    add.add(421)  # edge.api.limits.LanGate
    add.add(503)  # edge.api.limits.LanGate: too many requests in flight
    for status in add:
        responses.setdefault(str(status), {"description": TITLES[status]})
    if "503" in responses and "Retry-After" not in responses["503"].get("headers", {}):
        responses["503"]["description"] += (
            "; also when the box serves its limit of requests at once ([api.limits] "
            "max_requests, live streams included): try again after Retry-After seconds")
        responses["503"]["headers"] = {"Retry-After": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "integer", "minimum": 1}}}
    for status, resp in responses.items():
        if status.isdigit() and int(status) >= 400:
            resp["content"] = {PROBLEM: {"schema": PROBLEM_REF}}
    op["description"] = (op.get("description", "").strip() + "\n\n" + note).strip()
