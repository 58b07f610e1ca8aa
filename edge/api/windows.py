"""Windows and their staff: PIN login (a session per window), logout, the window's operations."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import Field

from edge.api.auth import Principal, Roles, new_token, sha256_hex
from edge.api.deps import ApiContext, Ctx
from edge.api.limits import client_address
from edge.api.spec import refusals
from edge.api.views import Body, ticket_view, window_view
from edge.domain.errors import DomainError
from edge.store import Store

router = APIRouter(tags=["windows and staff"])
WindowNo = Annotated[int, PathParam(ge=1, le=9999)]


class LoginRequest(Body):
    staff_id: str = Field(min_length=1, max_length=32)
    pin: str = Field(min_length=4, max_length=32)
    window: int = Field(ge=1, le=9999)


class CallRequest(Body):
    ticket: str = Field(min_length=1, max_length=40)
    reason: str = Field(min_length=1, max_length=200)


class ReasonRequest(Body):
    reason: str = Field(min_length=1, max_length=200)


class TransferRequest(Body):
    service: str = Field(min_length=1, max_length=16)


def own_window(who: Principal, window: int) -> None:
    if who.role == "staff" and who.window != window:
        raise DomainError("forbidden", "not-your-window",
                          f"your session is for window {who.window}, not {window}", "window")


async def at_window(window: WindowNo,
              who: Annotated[Principal, Depends(Roles("staff"))]) -> Principal:
    """The staff member logged in at this window (their session is bound to it)."""
    own_window(who, window)
    return who


AtWindow = Annotated[Principal, Depends(at_window)]


async def start_session(ctx: ApiContext, staff_id: str, window: int, via: str | None = None
                        ) -> dict[str, Any]:
    """Log staff in at a window: the domain's login and the session row in one commit."""
    rt = ctx.rt
    token = new_token()
    expires = rt.clock.now() + timedelta(hours=rt.config.api.session_hours)
    await rt.run(lambda h: (None, h.login(staff_id, window)), writes=[
        Store.open_session(sha256_hex(token), staff_id, window, expires.isoformat())])
    out = {"token": token, "staff_id": staff_id, "window": window,
           "expires_at": expires.isoformat()}
    if via:
        out["via"] = via
    return out


@router.post("/api/v1/sessions", status_code=201,
             responses=refusals(401, 403, 404, 409, 429))
async def login(body: LoginRequest, request: Request, ctx: Ctx) -> dict[str, Any]:
    """Staff log in at a window with their id and PIN; the token is bound to that window.

    5 wrong PINs in a row lock a staff id for 15 minutes ([api.logins]); each failure and
    each lock is an event. Attempts per client address are rate-limited (429)."""
    guard = ctx.guards.logins
    address = client_address(request.scope)
    guard.before(body.staff_id, address)
    try:
        staff = ctx.rt.hall.staff.get(body.staff_id)
        if not await guard.verify(staff.pin_hash if staff else None, body.pin):
            await guard.failed(body.staff_id, staff is not None, body.window, address)
            raise HTTPException(401, "unknown staff id or wrong PIN")
        guard.succeeded(body.staff_id)
    finally:
        guard.done(body.staff_id)
    return await start_session(ctx, body.staff_id, body.window)


@router.delete("/api/v1/windows/{window}/session", responses=refusals(404, 409))
async def logout(window: WindowNo, ctx: Ctx,
                 who: Annotated[Principal, Depends(Roles("staff", "manager"))]
                 ) -> dict[str, Any]:
    own_window(who, window)
    await ctx.rt.run(lambda h: (None, h.logout(window)),
                     writes=[Store.end_window_sessions(window)])
    return window_view(ctx.rt.hall, window)


@router.get("/api/v1/windows/{window}", responses=refusals(404))
async def get_window(window: WindowNo, ctx: Ctx,
                     who: Annotated[Principal, Depends(Roles("staff", "manager", "central"))]
                     ) -> dict[str, Any]:
    own_window(who, window)
    ctx.rt.hall._window(window)
    return window_view(ctx.rt.hall, window)


@router.post("/api/v1/windows/{window}/call-next", responses=refusals(404, 409))
async def call_next(window: WindowNo, who: AtWindow, ctx: Ctx) -> dict[str, Any]:
    t = await ctx.rt.run(lambda h: h.call_next(window, who.name))
    return {"called": ticket_view(ctx.rt.hall, t) if t else None,
            "window": window_view(ctx.rt.hall, window)}


@router.post("/api/v1/windows/{window}/call", responses=refusals(404, 409))
async def call(window: WindowNo, body: CallRequest, who: AtWindow, ctx: Ctx) -> dict[str, Any]:
    """Call a ticket out of order (a reason is required and journaled)."""
    t = await ctx.rt.run(lambda h: h.call(window, body.ticket, body.reason, who.name))
    return {"called": ticket_view(ctx.rt.hall, t), "window": window_view(ctx.rt.hall, window)}


def _simple(path: str, op: str) -> None:
    async def handler(window: WindowNo, who: AtWindow, ctx: Ctx) -> dict[str, Any]:
        await ctx.rt.run(lambda h: (None, getattr(h, op)(window, staff=who.name)))
        return window_view(ctx.rt.hall, window)

    handler.__name__ = op
    router.post(f"/api/v1/windows/{{window}}/{path}", name=op,
                responses=refusals(404, 409))(handler)


for _path, _op in (("recall", "recall"), ("no-show", "no_show"), ("start", "start"),
                   ("finish", "finish"), ("resume", "resume")):
    _simple(_path, _op)


@router.post("/api/v1/windows/{window}/pause", responses=refusals(404, 409))
async def pause(window: WindowNo, body: ReasonRequest, who: AtWindow, ctx: Ctx
                ) -> dict[str, Any]:
    await ctx.rt.run(lambda h: (None, h.pause(window, body.reason, who.name)))
    return window_view(ctx.rt.hall, window)


@router.post("/api/v1/windows/{window}/transfer", responses=refusals(404, 409))
async def transfer(window: WindowNo, body: TransferRequest, who: AtWindow, ctx: Ctx
                   ) -> dict[str, Any]:
    t = await ctx.rt.run(lambda h: h.transfer(window, body.service, who.name))
    return {"new_ticket": ticket_view(ctx.rt.hall, t),
            "window": window_view(ctx.rt.hall, window)}
