"""Who is calling: config tokens (kiosk, manager, central) and staff window sessions.

Routes declare who may call them with a `Roles` dependency; the OpenAPI spec is built from the
same declaration (edge.api.spec), so the spec cannot drift from what is enforced.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from edge.api.deps import ApiContext, ctx_of

ROLES = ("kiosk", "console", "staff", "manager", "central")
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    role: str  # kiosk | console | staff | manager | central
    name: str
    window: int | None = None  # staff and console: the window it is bound to


def _bearer(conn: HTTPConnection, query_token: bool) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # Only where a browser cannot send a header (EventSource): a token in a URL ends up in
    # logs, history and Referer headers.
    return conn.query_params.get("token") if query_token else None


def identify(conn: HTTPConnection, ctx: ApiContext, query_token: bool = False
             ) -> Principal | None:
    token = _bearer(conn, query_token)
    if not token:
        return None
    digest = sha256_hex(token)
    for t in ctx.rt.config.api.tokens:
        if secrets.compare_digest(t.token_sha256, digest):
            return Principal(t.role, t.name)
    device = ctx.rt.store.paired_device(digest)
    if device is not None:
        return Principal(device[1], device[0], device[2])
    found = ctx.rt.store.session(digest)
    if found and datetime.fromisoformat(found[2]) > ctx.rt.clock.now():
        staff, window = found[0], found[1]
        # Valid only while that staff member is still logged in at that window in memory: a
        # logout or a new business day ends it at once, before its row's deletion commits.
        w = ctx.rt.hall.windows.get(window)
        if w is not None and w.staff == staff:
            return Principal("staff", staff, window)
    return None


def check(who: Principal | None, roles: tuple[str, ...]) -> Principal:
    if who is None:
        raise HTTPException(401, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    if who.role not in roles:
        raise HTTPException(403, f"role {who.role} may not do this; needs {' or '.join(roles)}")
    return who


def require(conn: HTTPConnection, ctx: ApiContext, *roles: str) -> Principal:
    return check(identify(conn, ctx), roles)


class Roles:
    """Dependency: the caller, who must hold one of `roles` (401 without a valid token, 403
    with another role)."""

    anonymous = False

    def __init__(self, *roles: str, query_token: bool = False) -> None:
        self.roles = roles
        self.query_token = query_token  # ?token= accepted (EventSource endpoints only)

    async def __call__(self, conn: HTTPConnection) -> Principal:
        # async: on the loop, not FastAPI's thread pool (a token check is a dict lookup or one
        # indexed read; the hop per request cost more than the check).
        return check(identify(conn, ctx_of(conn), self.query_token), self.roles)


class OpenTo(Roles):
    """Dependency for routes anyone may call, where `roles` unlock more (a priority ticket
    needs a kiosk or staff token); the caller is None without a valid token, and the route
    checks what the request asks for."""

    anonymous = True

    async def __call__(self, conn: HTTPConnection  # type: ignore[override]
                       ) -> Principal | None:
        return self.caller(conn, ctx_of(conn))

    def caller(self, conn: HTTPConnection, ctx: ApiContext) -> Principal | None:
        return identify(conn, ctx, self.query_token)


def declares(roles: Roles) -> Callable[[Endpoint], Endpoint]:
    """For a route that identifies its caller in its own body instead of through a
    dependency: the spec (edge.api.spec) reads the route's roles from here, the same object
    the route checks with."""
    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.roles = roles  # type: ignore[attr-defined]
        return endpoint
    return mark
