"""Who is calling: config tokens (kiosk, manager, central) and staff window sessions."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from fastapi import HTTPException, Request

from edge.runtime import HallRuntime


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    role: str  # kiosk | staff | manager | central
    name: str
    window: int | None = None  # staff only: the window this session is bound to


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # EventSource cannot send headers; the streams accept ?token= instead.
    return request.query_params.get("token")


def identify(request: Request, rt: HallRuntime) -> Principal | None:
    token = _bearer(request)
    if not token:
        return None
    digest = sha256_hex(token)
    for t in rt.config.api.tokens:
        if secrets.compare_digest(t.token_sha256, digest):
            return Principal(t.role, t.name)
    row = rt.store.session(digest)
    if row and datetime.fromisoformat(row[2]) > rt.clock.now():
        staff, window = row[0], row[1]
        # Valid only while that staff member is still logged in at that window in memory: a
        # logout or a new business day ends it at once, before its row's deletion commits.
        w = rt.hall.windows.get(window)
        if w is not None and w.staff == staff:
            return Principal("staff", staff, window)
    return None


def require(request: Request, rt: HallRuntime, *roles: str) -> Principal:
    who = identify(request, rt)
    if who is None:
        raise HTTPException(401, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    if who.role not in roles:
        raise HTTPException(403, f"role {who.role} may not do this; needs {' or '.join(roles)}")
    return who
