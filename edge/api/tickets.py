"""Taking tickets (kiosk, desk), a ticket's state, cancel and reactivate, the queue's state."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from pydantic import Field

from edge.api.auth import OpenTo, Principal, Roles, check, declares
from edge.api.deps import ApiContext, Ctx, ctx_of
from edge.api.limits import client_address
from edge.api.problems import Refusal
from edge.api.spec import refusals
from edge.api.views import Body, json_answer, ticket_view, window_view
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent, Priority, Source, Ticket
from edge.domain.queue import Hall
from edge.store import Store

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")
KEY_POINTER = "/header/Idempotency-Key"
PRINT_WAIT_S = 3.0  # how long the kiosk response waits for the printer's verdict
TicketRef = Annotated[str, PathParam(max_length=40)]
Issue = Callable[[Hall], tuple[Ticket, list[DomainEvent]]]

router = APIRouter(tags=["tickets"])
RETRIED: dict[int | str, dict[str, Any]] = {200: {
    "description": "A retry with a known Idempotency-Key: the ticket already issued",
    "content": {"application/json": {"schema": {"type": "object"}}}}}
ISSUED: dict[int | str, dict[str, Any]] = {201: {
    "description": "The ticket issued",
    "content": {"application/json": {"schema": {"type": "object"}}}}}
TAKERS = OpenTo("kiosk", "staff", "manager")


class TicketRequest(Body):
    service: str = Field(min_length=1, max_length=16)
    priority: Literal["normal", "green"] = "normal"
    source: Literal["kiosk", "desk"] = "kiosk"


class ReasonRequest(Body):
    reason: str = Field(min_length=1, max_length=200)


class ReactivateRequest(Body):
    window: int | None = Field(default=None, ge=1, le=9999)


async def idempotent(ctx: ApiContext, request: Request, issue: Issue) -> tuple[Ticket, bool]:
    """Issue once per Idempotency-Key: a retry after a lost answer gets the same ticket; the
    same key with another request (method, path, body) is refused."""
    rt = ctx.rt
    key = request.headers.get("idempotency-key")
    if key is None:
        return await rt.run(issue), True
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise Refusal(422, "bad-idempotency-key",
                      "Idempotency-Key must be 8-64 of A-Z a-z 0-9 _ -", KEY_POINTER)
    digest = hashlib.sha256(request.method.encode() + request.url.path.encode()
                            + await request.body()).hexdigest()

    def reuse(ticket_id: str, first: str | None) -> Ticket:
        if first is not None and first != digest:
            raise Refusal(422, "idempotency-key-reused", "this Idempotency-Key was used for "
                          "another request; use a new key for a new request", KEY_POINTER)
        try:
            return rt.hall.ticket(ticket_id)
        except DomainError as e:  # issued on an earlier day
            raise Refusal(404, e.code, e.detail, KEY_POINTER) from None

    pending = ctx.pending_keys
    inflight = pending.get(key)
    if inflight is not None:  # the same key is being issued right now: share its answer
        first, fut = inflight
        t = await asyncio.shield(fut)
        return reuse(t.id, first), False
    row = rt.store.idempotent_ticket(key)
    if row is not None:
        return reuse(*row), False
    fut: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
    pending[key] = (digest, fut)
    try:
        t, done = rt.submit(issue)
    except BaseException as e:
        pending.pop(key, None)
        fut.set_exception(e)
        fut.exception()  # retrieved: a lone failure is not "never retrieved"
        raise
    # Same group as the ticket: the key and its ticket are durable together.
    rt.store.write(Store.remember_idempotency(key, t.id, rt.clock.now().isoformat(), digest))
    try:
        await done.done()
    except BaseException as e:
        fut.set_exception(e)
        fut.exception()
        raise
    finally:
        pending.pop(key, None)
    fut.set_result(t)
    return t, True


async def issue_and_print(ctx: ApiContext, request: Request, who: Principal | None,
                          issue: Issue) -> tuple[dict[str, Any], int]:
    """Issue on the kiosk's printer; the ticket stands whatever the printer says. The ticket's
    view and the answer's status: 201, or 200 for a retry with a known Idempotency-Key (the
    ticket already issued; nothing is printed again)."""
    desk = ctx.services.print_desk
    kiosk = who.name if who and who.role == "kiosk" else None

    def issue_at_kiosk(h: Hall) -> tuple[Ticket, list[DomainEvent]]:
        t, events = issue(h)
        if desk is not None:
            desk.expect(t.id, kiosk)  # before its event is published: the right printer
        return t, events

    t, new = await idempotent(ctx, request, issue_at_kiosk)
    view = ticket_view(ctx.rt.hall, t)
    if not new:
        return view, 200
    if desk is not None:
        notice = await desk.outcome(t.id, timeout=PRINT_WAIT_S)
        if notice is not None:
            view["printer"] = notice  # e.g. out of paper: "请拍照保存屏幕上的号码"
    return view, 201


@router.post("/api/v1/tickets", status_code=201, response_model=None,
             responses={**ISSUED, **RETRIED, **refusals(401, 403, 404, 409, 422, 429)})
@declares(TAKERS)
async def take_ticket(body: TicketRequest, request: Request) -> Response:
    """Take a number. Anyone may take a normal kiosk ticket, a few per client address and
    time ([api.tickets]; a paired kiosk is never limited); a green-channel ticket needs a
    kiosk, staff or manager token, a desk ticket a staff or manager token."""
    # Every applicant's ticket comes through here. The caller is identified in the body, not
    # by per-request dependencies, and the answer is serialised once: FastAPI's dependency
    # solving and its validation of a returned dict were a fifth of this route's CPU.
    ctx = ctx_of(request)
    who = TAKERS.caller(request, ctx)
    if body.priority != "normal" or body.source != "kiosk":
        check(who, TAKERS.roles)
    if body.source == "desk":
        check(who, ("staff", "manager"))
    anonymous = who is None or who.role not in TAKERS.roles
    address = client_address(request.scope)
    if anonymous:
        ctx.guards.tickets.before(address)
    try:
        view, status = await issue_and_print(
            ctx, request, who,
            lambda h: h.issue(body.service, Priority(body.priority), Source(body.source)))
    except BaseException:
        if anonymous:
            ctx.guards.tickets.not_issued(address)
        raise
    if anonymous and status == 200:  # a retry answered with its ticket
        ctx.guards.tickets.not_issued(address)
    return json_answer(view, status)


@router.get("/api/v1/tickets/{ticket}", responses=refusals(404),
            dependencies=[Depends(Roles("kiosk", "staff", "manager", "central"))])
async def get_ticket(ticket: TicketRef, ctx: Ctx) -> dict[str, Any]:
    return ticket_view(ctx.rt.hall, ctx.rt.hall.ticket(ticket))


@router.post("/api/v1/tickets/{ticket}/cancel", responses=refusals(404, 409),
             dependencies=[Depends(Roles("manager"))])
async def cancel(ticket: TicketRef, body: ReasonRequest, ctx: Ctx) -> dict[str, Any]:
    await ctx.rt.run(lambda h: (None, h.cancel(ticket, body.reason)))
    return ticket_view(ctx.rt.hall, ctx.rt.hall.ticket(ticket))


@router.post("/api/v1/tickets/{ticket}/reactivate", responses=refusals(404, 409))
async def reactivate(ticket: TicketRef, body: ReactivateRequest, ctx: Ctx,
                     who: Annotated[Principal, Depends(Roles("staff", "manager"))]
                     ) -> dict[str, Any]:
    window = who.window if who.role == "staff" else body.window
    await ctx.rt.run(lambda h: (None, h.reactivate(ticket, window)))
    return ticket_view(ctx.rt.hall, ctx.rt.hall.ticket(ticket))


@router.get("/api/v1/queue",
            dependencies=[Depends(Roles("kiosk", "staff", "manager", "central"))])
async def queue(ctx: Ctx) -> dict[str, Any]:
    h = ctx.rt.hall
    return {
        "day": h.day,
        "services": [{
            "service": code, "name": s.name, "open": h.is_open(code),
            "waiting": [ticket_view(h, t, ahead=i) for i, t in enumerate(h.waiting(code))],
            "est_wait_ms": h.estimate_wait_ms(code, h.waiting_count(code)),
            "avg_service_ms": h.avg_service_ms(code), "issued": h.counters.get(code, 0),
            "daily_cap": s.daily_cap, "open_windows": h.open_windows_for(code),
        } for code, s in h.services.items()],
        "windows": [window_view(h, n) for n in sorted(h.windows)],
    }
