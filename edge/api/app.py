"""Routes. Every handler runs on the loop thread, so domain operations never interleave."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edge.api import evaluator, problems, reports
from edge.api.auth import Principal, identify, new_token, require, sha256_hex
from edge.assembly import HallServices
from edge.domain.errors import DomainError
from edge.domain.model import Priority, Source, Ticket
from edge.domain.queue import Hall
from edge.pins import pin_matches
from edge.resources import ui_dir
from edge.runtime import HallRuntime
from edge.store import Store

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")
UI_DIR = ui_dir()  # issue 13: from the package, so an installed wheel serves the pages
PRINT_WAIT_S = 3.0  # how long the kiosk response waits for the printer's verdict


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TicketRequest(Body):
    service: str = Field(min_length=1, max_length=16)
    priority: Literal["normal", "green"] = "normal"
    source: Literal["kiosk", "desk"] = "kiosk"


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


class ReactivateRequest(Body):
    window: int | None = Field(default=None, ge=1, le=9999)


class AppointmentRequest(Body):
    code: str = Field(pattern=r"^[A-Za-z0-9-]{4,32}$")
    service: str = Field(min_length=1, max_length=16)
    slot_start: AwareDatetime
    slot_end: AwareDatetime


WindowNo = Annotated[int, PathParam(ge=1, le=9999)]


def ticket_view(hall: Hall, t: Ticket) -> dict[str, Any]:
    waiting = hall.waiting(t.service)
    ahead = sum(1 for x in waiting if hall._fifo_key(x) < hall._fifo_key(t)) \
        if t in waiting else 0
    return {
        "id": t.id, "number": t.number, "service": t.service,
        "service_name": hall.services[t.service].name, "priority": t.priority.value,
        "source": t.source.value, "state": t.state.value,
        "issued_at": hall.local(t.issued_at).isoformat(timespec="seconds"),
        "window": t.window, "ahead": ahead,
        "est_wait_ms": hall.estimate_wait_ms(t.service, ahead), "recalls": t.recalls,
        "appointment": t.appointment, "transferred_from": t.transferred_from,
        "transferred_to": t.transferred_to,
    }


def window_view(hall: Hall, n: int) -> dict[str, Any]:
    w = hall.windows[n]
    cur = hall.current_ticket(n)
    nxt, rule = hall.pick_next(n) if w.staff and not w.paused and not cur else (None, "")
    return {
        "window": n, "name": hall.window_cfg[n].name, "staff": w.staff, "paused": w.paused,
        "pause_reason": w.pause_reason, "current": ticket_view(hall, cur) if cur else None,
        "services": [s.service for s in hall.window_cfg[n].services],
        "waiting": sum(len(hall.waiting(s.service)) for s in hall.window_cfg[n].services),
        "next": {"number": nxt.number, "rule": rule} if nxt else None,
        "priority_streak": w.priority_streak,
    }


def create_app(rt: HallRuntime, services: HallServices | None = None) -> FastAPI:
    services = services or HallServices()
    app = FastAPI(title="hallbox", version="1", summary="A government service hall's box")
    problems.install(app)
    app.state.runtime = rt
    app.state.services = services

    def staff_at(request: Request, window: int) -> Principal:
        who = require(request, rt, "staff")
        if who.window != window:
            raise DomainError("forbidden", "not-your-window",
                              f"your session is for window {who.window}, not {window}",
                              "/path/window")
        return who

    # ---- public ------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(UI_DIR / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "seq": rt.store.head_seq, "outbox_pending": rt.store.outbox_pending()}

    @app.get("/api/v1/board")
    async def board() -> dict[str, Any]:
        opened = rt.tick()
        if opened is not None:
            await opened.done()
        return rt.hall.board()

    pending_keys: dict[str, tuple[str, asyncio.Future[Ticket]]] = {}

    async def idempotent(request: Request, issue: Any) -> tuple[Ticket, bool]:
        """Issue once per Idempotency-Key: a retry after a lost answer gets the same ticket."""
        key = request.headers.get("idempotency-key")
        if key is None:
            return await rt.run(issue), True
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise DomainError("invalid", "bad-idempotency-key",
                              "Idempotency-Key must be 8-64 of A-Z a-z 0-9 _ -",
                              "/header/Idempotency-Key")
        digest = hashlib.sha256(request.method.encode() + request.url.path.encode()
                                + await request.body()).hexdigest()

        def reuse(ticket_id: str, first: str | None) -> Ticket:
            if first is not None and first != digest:
                raise DomainError("invalid", "idempotency-key-reused",
                                  "this Idempotency-Key was used for another request",
                                  "/header/Idempotency-Key")
            return rt.hall.ticket(ticket_id, "/header/Idempotency-Key")

        inflight = pending_keys.get(key)
        if inflight is not None:  # the same key is being issued right now: share its answer
            first, fut = inflight
            t = await asyncio.shield(fut)
            return reuse(t.id, first), False
        row = rt.store.idempotent_ticket(key)
        if row is not None:
            return reuse(*row), False
        fut: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        pending_keys[key] = (digest, fut)
        issued: list[Ticket] = []

        def op(h: Hall) -> tuple[Ticket, Any]:
            t, events = issue(h)
            issued.append(t)
            return t, events

        try:
            t, done = rt.submit(op)
        except BaseException as e:
            pending_keys.pop(key, None)
            fut.set_exception(e)
            fut.exception()  # retrieved: a lone failure is not "never retrieved"
            raise
        # Same group as the ticket: the key and its ticket are durable together.
        rt.store.write(Store.remember_idempotency(key, t.id, rt.clock.now().isoformat(),
                                                  digest))
        try:
            await done.done()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()
            raise
        finally:
            pending_keys.pop(key, None)
        fut.set_result(t)
        return t, True

    @app.post("/api/v1/tickets", status_code=201)
    async def take_ticket(body: TicketRequest, request: Request,
                          response: Response) -> dict[str, Any]:
        if body.priority != "normal" or body.source != "kiosk":
            require(request, rt, "kiosk", "staff", "manager")
        if body.source == "desk":
            require(request, rt, "staff", "manager")
        return await issue_and_print(
            request, response, lambda h: h.issue(body.service, Priority(body.priority),
                                                 Source(body.source)))

    async def issue_and_print(request: Request, response: Response,
                              op: Any) -> dict[str, Any]:
        """Issue on the kiosk's printer; the ticket stands whatever the printer says.

        A retry with a known Idempotency-Key returns the ticket already issued (200) and prints
        nothing again."""
        who = identify(request, rt)
        desk = services.print_desk
        kiosk = who.name if who and who.role == "kiosk" else None

        def issue_at_kiosk(h: Hall) -> tuple[Ticket, Any]:
            t, events = op(h)
            if desk is not None:
                desk.expect(t.id, kiosk)  # before its event is published: the right printer
            return t, events

        t, new = await idempotent(request, issue_at_kiosk)
        view = ticket_view(rt.hall, t)
        if not new:
            response.status_code = 200
            return view
        if desk is not None:
            notice = await desk.outcome(t.id, timeout=PRINT_WAIT_S)
            if notice is not None:
                view["printer"] = notice  # e.g. out of paper: "请拍照保存屏幕上的号码"
        return view

    # ---- appointments --------------------------------------------------------------------
    @app.post("/api/v1/appointments", status_code=201)
    async def book(body: AppointmentRequest, request: Request) -> dict[str, Any]:
        require(request, rt, "central", "manager")
        await rt.run(lambda h: (None, h.book(body.code, body.service, body.slot_start,
                                           body.slot_end)))
        a = rt.hall.appointments[body.code]
        return {"code": a.code, "service": a.service, "state": a.state.value,
                "slot_start": a.slot_start.isoformat(), "slot_end": a.slot_end.isoformat()}

    @app.post("/api/v1/appointments/{code}/check-in", status_code=201)
    async def check_in(code: Annotated[str, PathParam(max_length=32)], request: Request,
                       response: Response) -> dict[str, Any]:
        require(request, rt, "kiosk", "manager")
        return await issue_and_print(request, response, lambda h: h.check_in(code))

    # ---- tickets -------------------------------------------------------------------------
    @app.get("/api/v1/tickets/{ticket}")
    async def get_ticket(ticket: Annotated[str, PathParam(max_length=40)],
                         request: Request) -> dict[str, Any]:
        require(request, rt, "kiosk", "staff", "manager", "central")
        return ticket_view(rt.hall, rt.hall.ticket(ticket, "/path/ticket"))

    @app.post("/api/v1/tickets/{ticket}/cancel")
    async def cancel(ticket: Annotated[str, PathParam(max_length=40)], body: ReasonRequest,
                     request: Request) -> dict[str, Any]:
        require(request, rt, "manager")
        await rt.run(lambda h: (None, h.cancel(ticket, body.reason)))
        return ticket_view(rt.hall, rt.hall.ticket(ticket, "/path/ticket"))

    @app.post("/api/v1/tickets/{ticket}/reactivate")
    async def reactivate(ticket: Annotated[str, PathParam(max_length=40)],
                         body: ReactivateRequest, request: Request) -> dict[str, Any]:
        who = require(request, rt, "staff", "manager")
        window = who.window if who.role == "staff" else body.window
        await rt.run(lambda h: (None, h.reactivate(ticket, window)))
        return ticket_view(rt.hall, rt.hall.ticket(ticket, "/path/ticket"))

    # ---- staff sessions ------------------------------------------------------------------
    @app.post("/api/v1/sessions", status_code=201)
    async def login(body: LoginRequest) -> dict[str, Any]:
        staff = rt.hall.staff.get(body.staff_id)
        ok = False
        if staff is not None:
            # argon2 is deliberately slow and 64 MiB large: off the loop, one at a time.
            ok = await pin_matches(staff.pin_hash, body.pin)
        if not ok:
            raise HTTPException(401, "unknown staff id or wrong PIN")
        token = new_token()
        expires = rt.clock.now() + timedelta(hours=rt.config.api.session_hours)

        save = Store.open_session(sha256_hex(token), body.staff_id, body.window,
                                  expires.isoformat())
        await rt.run(lambda h: (None, h.login(body.staff_id, body.window)), writes=[save])
        return {"token": token, "staff_id": body.staff_id, "window": body.window,
                "expires_at": expires.isoformat()}

    @app.delete("/api/v1/windows/{window}/session")
    async def logout(window: WindowNo, request: Request) -> dict[str, Any]:
        who = require(request, rt, "staff", "manager")
        if who.role == "staff" and who.window != window:
            raise DomainError("forbidden", "not-your-window",
                              f"your session is for window {who.window}", "/path/window")

        await rt.run(lambda h: (None, h.logout(window)),
                     writes=[Store.end_window_sessions(window)])
        return window_view(rt.hall, window)

    # ---- window operations ---------------------------------------------------------------
    @app.get("/api/v1/windows/{window}")
    async def get_window(window: WindowNo, request: Request) -> dict[str, Any]:
        who = require(request, rt, "staff", "manager", "central")
        if who.role == "staff" and who.window != window:
            staff_at(request, window)
        rt.hall._window(window)
        return window_view(rt.hall, window)

    @app.post("/api/v1/windows/{window}/call-next")
    async def call_next(window: WindowNo, request: Request) -> dict[str, Any]:
        who = staff_at(request, window)
        t = await rt.run(lambda h: h.call_next(window, who.name))
        return {"called": ticket_view(rt.hall, t) if t else None,
                "window": window_view(rt.hall, window)}

    @app.post("/api/v1/windows/{window}/call")
    async def call(window: WindowNo, body: CallRequest, request: Request) -> dict[str, Any]:
        who = staff_at(request, window)
        t = await rt.run(lambda h: h.call(window, body.ticket, body.reason, who.name))
        return {"called": ticket_view(rt.hall, t), "window": window_view(rt.hall, window)}

    def simple(path: str, op: str) -> None:
        async def handler(window: WindowNo, request: Request) -> dict[str, Any]:
            who = staff_at(request, window)
            await rt.run(lambda h: (None, getattr(h, op)(window, staff=who.name)))
            return window_view(rt.hall, window)

        handler.__name__ = op
        app.post(f"/api/v1/windows/{{window}}/{path}", name=op)(handler)

    for path, op in (("recall", "recall"), ("no-show", "no_show"), ("start", "start"),
                     ("finish", "finish"), ("resume", "resume")):
        simple(path, op)

    @app.post("/api/v1/windows/{window}/pause")
    async def pause(window: WindowNo, body: ReasonRequest, request: Request) -> dict[str, Any]:
        who = staff_at(request, window)
        await rt.run(lambda h: (None, h.pause(window, body.reason, who.name)))
        return window_view(rt.hall, window)

    @app.post("/api/v1/windows/{window}/transfer")
    async def transfer(window: WindowNo, body: TransferRequest,
                       request: Request) -> dict[str, Any]:
        who = staff_at(request, window)
        t = await rt.run(lambda h: h.transfer(window, body.service, who.name))
        return {"new_ticket": ticket_view(rt.hall, t), "window": window_view(rt.hall, window)}

    # ---- queue state and the journal -----------------------------------------------------
    @app.get("/api/v1/queue")
    async def queue(request: Request) -> dict[str, Any]:
        require(request, rt, "kiosk", "staff", "manager", "central")
        h = rt.hall
        return {
            "day": h.day,
            "services": [{
                "service": code, "name": s.name, "open": h.is_open(code),
                "waiting": [ticket_view(h, t) for t in h.waiting(code)],
                "est_wait_ms": h.estimate_wait_ms(code, len(h.waiting(code))),
                "avg_service_ms": h.avg_service_ms(code), "issued": h.counters.get(code, 0),
                "daily_cap": s.daily_cap, "open_windows": h.open_windows_for(code),
            } for code, s in h.services.items()],
            "windows": [window_view(h, n) for n in sorted(h.windows)],
        }

    @app.get("/api/v1/events")
    async def events(request: Request, after_seq: Annotated[int, Query(ge=0)] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     type: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
        require(request, rt, "manager", "central")
        items = rt.store.events_after(after_seq, limit, type)
        return {"events": items, "head_seq": rt.store.head_seq,
                "next_after_seq": items[-1]["seq"] if items else after_seq}

    # ---- live streams (SSE) --------------------------------------------------------------
    async def sse(request: Request, initial: Any, render: Any) -> AsyncIterator[bytes]:
        """Subscribe first, then take the initial frames: nothing committed in between is lost
        (both happen on the loop thread with no await between them)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        overflow = asyncio.Event()

        def offer(env: dict[str, Any]) -> None:
            try:
                queue.put_nowait(env)
            except asyncio.QueueFull:
                overflow.set()

        unsubscribe = rt.bus.subscribe(f"sse-{id(queue)}", offer)
        try:
            for chunk in initial():
                yield chunk.encode()
            while not await request.is_disconnected():
                if overflow.is_set():
                    # A client too slow to keep up is cut off rather than silently skipping
                    # events; EventSource reconnects with Last-Event-ID and resumes.
                    yield b"event: overflow\ndata: {}\n\n"
                    return
                try:
                    env = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                out = render(env)
                if out:
                    yield out.encode()
        finally:
            unsubscribe()

    def frame(event: str, data: Any, eid: int | None = None) -> str:
        head = f"id: {eid}\n" if eid is not None else ""
        return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    @app.get("/api/v1/board/stream")
    async def board_stream(request: Request) -> StreamingResponse:
        def render(env: dict[str, Any]) -> str:
            out = frame("board", rt.hall.board(), env["seq"])
            if env["type"] in ("ticket.called", "ticket.recalled"):
                d = env["data"]
                out = frame("call", {"number": d["number"], "window": d["window"],
                                     "type": env["type"]}) + out
            return out

        return StreamingResponse(sse(request, lambda: [frame("board", rt.hall.board())], render),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/api/v1/events/stream")
    async def events_stream(request: Request,
                            after_seq: Annotated[int | None, Query(ge=0)] = None
                            ) -> StreamingResponse:
        require(request, rt, "manager", "central")
        resume = request.headers.get("last-event-id", "")
        if after_seq is None and resume.isdigit():
            after_seq = int(resume)
        last = 0

        def backlog() -> list[str]:
            nonlocal last
            last = rt.store.head_seq
            if after_seq is None:
                return []
            return [frame("event", env, env["seq"])
                    for env in rt.store.events_after(after_seq, 1_000_000)]

        def render(env: dict[str, Any]) -> str:
            return frame("event", env, env["seq"]) if env["seq"] > last else ""

        return StreamingResponse(sse(request, backlog, render), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/api/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        require(request, rt, "kiosk", "staff", "manager", "central")
        return {"devices": rt.health.snapshot()}

    @app.get("/api/v1/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        who = identify(request, rt)
        if who is None:
            raise HTTPException(401, "no valid token", headers={"WWW-Authenticate": "Bearer"})
        return {"role": who.role, "name": who.name, "window": who.window}

    app.include_router(evaluator.router(rt, services))
    app.include_router(reports.router(rt, services))  # supervision (issue 12)
    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
    return app
