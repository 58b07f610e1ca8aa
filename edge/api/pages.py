"""The pages people use (kiosk, staff console, hall board, evaluator tablet, manager dashboard),
the front-end libraries they load from the box, `/docs` offline, and the few reads they need
beyond the core API: the hall's layout, a ticket's QR code, a window's console state and
stream, the hall board's stream with recent calls and notices, the dashboard and a ticket's
timeline. Installed into the app with `pages.install(app, rt, services)`.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from edge.api.auth import OpenTo, Principal, Roles
from edge.api.evaluators import _tablet_for_token
from edge.api.spec import refusals
from edge.api.views import ticket_view, window_view
from edge.assembly import HallServices
from edge.domain import today
from edge.domain.errors import DomainError
from edge.domain.rating import LEVEL_NAMES, REASON_CHOICES, Level
from edge.ratings import RATING_TYPES
from edge.resources import ui_dir
from edge.runtime import HallRuntime

UI_DIR = ui_dir()  # from the package: a checkout and an installed wheel alike
NODE = UI_DIR / "node_modules"
# name in the URL -> folder of an npm package installed by the Makefile (never committed)
# (echarts' dist carries its Chinese locale "ZH" built in)
VENDOR = {"echarts": NODE / "echarts" / "dist", "swagger-ui": NODE / "swagger-ui-dist"}
PAGES = {"/staff": "staff.html", "/board": "board.html", "/evaluator": "evaluator.html",
         "/dashboard": "dashboard.html"}
RECENT_CALLS = 8
# Open page streams per box (each holds a queue and a subscription): a console per window of
# a 250-window hall, its boards, kiosks and dashboards.
MAX_STREAMS = 600
WindowNo = Annotated[int, PathParam(ge=1, le=9999)]
TicketRef = Annotated[str, PathParam(min_length=1, max_length=40)]
CALL_TYPES = ("ticket.called", "ticket.recalled")
SPOT_TYPES = ("spotcheck.started", "spotcheck.result")
NOTICE_TYPES = ("display.message", "display.cleared")


# Who may call (the same objects enforce the roles and document them in the spec).
StaffOrManager = Annotated[Principal, Depends(Roles("staff", "manager"))]
# EventSource sends no header: the console's stream alone takes its session token as ?token=.
StaffOrManagerStream = Annotated[Principal, Depends(Roles("staff", "manager",
                                                          query_token=True))]
ManagerOrCentral = Annotated[Principal, Depends(Roles("manager", "central"))]
StaffManagerOrTablet = Annotated[Principal | None, Depends(OpenTo("staff", "manager"))]


def install(app: FastAPI, rt: HallRuntime, services: HallServices) -> APIRouter:
    """Pages, vendor files, /docs (the app is created with docs_url=None) and the page API,
    whose router is returned for the spec."""
    for path, name in PAGES.items():
        app.add_api_route(path, _page(name), include_in_schema=False, methods=["GET"])
    for name, folder in VENDOR.items():
        # check_dir=False: a box without `npm ci` still starts; the dashboard says charts are
        # missing, /docs is blank.
        app.mount(f"/vendor/{name}", StaticFiles(directory=folder, check_dir=False),
                  name=f"vendor-{name}")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="hallbox API",
            swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/vendor/swagger-ui/favicon-32x32.png",
            # No validator badge: it would call validator.swagger.io from an offline hall.
            swagger_ui_parameters={"validatorUrl": None})

    api = router(rt, services)
    app.include_router(api)
    return api


def _page(name: str) -> Callable[[], Any]:
    async def page() -> FileResponse:
        return FileResponse(UI_DIR / name, headers={"Cache-Control": "no-cache"})

    return page


def frame(event: str, data: Any, eid: int | None = None) -> str:
    head = f"id: {eid}\n" if eid is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class BoardFeed:
    """Recent calls (newest first), the notice in force (the manager's or the central room's
    display.message, until its time or a display.cleared) and the open floor alerts, kept
    from the event path."""

    def __init__(self, rt: HallRuntime, services: HallServices) -> None:
        self.rt = rt
        self.services = services
        self.calls: deque[dict[str, Any]] = deque(maxlen=RECENT_CALLS)
        self.notice: dict[str, Any] | None = None
        for env in rt.store.events_since_day_opened([*CALL_TYPES, *NOTICE_TYPES]):
            self.on_event(env)
        rt.bus.subscribe("pages-board-feed", self.on_event)

    def on_event(self, env: dict[str, Any]) -> None:
        d = env["data"]
        if env["type"] == "day.opened":
            self.calls.clear()
        elif env["type"] in CALL_TYPES:
            call = {"number": d["number"], "window": d["window"],
                    "window_name": _window_name(self.rt, d["window"]),
                    "recall": env["type"] == "ticket.recalled", "seq": env["seq"],
                    "at": env["ts"]}
            for c in list(self.calls):
                if c["number"] == call["number"]:
                    self.calls.remove(c)
            self.calls.appendleft(call)
        elif env["type"] == "display.message" and d["target"] in ("main", "all"):
            until = datetime.fromisoformat(env["ts"]) + timedelta(seconds=d["seconds"])
            self.notice = {"text": d["text"], "until": until.isoformat(),
                           "source": d.get("source", "central")}
        elif env["type"] == "display.cleared" and d["target"] in ("main", "all"):
            self.notice = None

    def alerts(self) -> list[dict[str, Any]]:
        """Open yellow and red floor alerts, red first, as a public screen may show them:
        what and where, never who (no staff, ticket or rating reason: those are the
        dashboard's)."""
        sup = self.services.supervision
        if sup is None:
            return []
        names = {c: s.name for c, s in self.rt.hall.services.items()}
        out = []
        for a in sup.open_alerts():
            v = {k: a[k] for k in ("alert", "kind", "level", "value", "unit", "raised_at")}
            if a.get("window") is not None:
                v["where"] = _window_name(self.rt, a["window"])
            elif a.get("service"):
                v["where"] = names.get(a["service"], a["service"])
            else:
                v["where"] = a.get("device") or ""
            out.append(v)
        return out

    def view(self) -> dict[str, Any]:
        notice = self.notice
        if notice and datetime.fromisoformat(notice["until"]) <= self.rt.clock.now():
            notice = self.notice = None
        return {**self.rt.hall.board(), "calls": list(self.calls), "notice": notice,
                "alerts": self.alerts()}


class RatingEvents:
    """Today's rating events (requested, submitted, missing, rejected), from the event path."""

    def __init__(self, rt: HallRuntime) -> None:
        self.events: list[dict[str, Any]] = rt.store.events_since_day_opened(RATING_TYPES)
        rt.bus.subscribe("pages-rating-events", self.on_event)

    def on_event(self, env: dict[str, Any]) -> None:
        if env["type"] == "day.opened":
            self.events = []
        elif env["type"] in RATING_TYPES:
            self.events.append(env)


def _window_name(rt: HallRuntime, n: int) -> str:
    cfg = rt.hall.window_cfg.get(n)
    return cfg.name if cfg else f"{n}号窗口"


def _fraction(percent: float | None) -> float | None:
    """The statistics module's per cent (0-100) as the pages' fraction (0-1)."""
    return None if percent is None else round(percent / 100, 4)


def _avatar_svg(name: str) -> str:
    initial = html.escape(name[:1] or "?")
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 240 300">'
            '<rect width="240" height="300" fill="#dbe6f5"/>'
            '<circle cx="120" cy="110" r="58" fill="#9fb6d6"/>'
            '<path d="M20 300c0-70 45-110 100-110s100 40 100 110z" fill="#9fb6d6"/>'
            f'<text x="120" y="132" font-size="64" text-anchor="middle" fill="#fff" '
            f'font-family="Noto Sans CJK SC, WenQuanYi Zen Hei, sans-serif">{initial}</text>'
            '</svg>')


def _qr_url(rt: HallRuntime) -> str:
    dev = rt.config.devices
    printers = dev.printers if dev else []
    return printers[0].qr_url if printers else "https://zwfw.example.gov.cn/q/{ticket}"


def router(rt: HallRuntime, services: HallServices) -> APIRouter:
    api = APIRouter(tags=["pages"])
    feeds: list[BoardFeed] = []

    def feed() -> BoardFeed:
        """Made on first use: a box nobody shows a board for keeps no extra subscriber."""
        if not feeds:
            feeds.append(BoardFeed(rt, services))
        return feeds[0]
    streams = {"open": 0}

    def day_tickets() -> list[Any]:
        return [t for t in rt.hall.tickets.values() if t.day == rt.hall.day]

    tallies: list[RatingEvents] = []

    def rating_events() -> list[dict[str, Any]]:
        """Today's rating events, kept from the event path (no journal read per frame)."""
        if not tallies:
            tallies.append(RatingEvents(rt))
        return tallies[0].events

    @api.get("/api/v1/pages/hall")
    async def hall_layout() -> dict[str, Any]:
        """What the pages lay out: services, windows (and which have a fingerprint sensor),
        the rating levels. Public: the board shows all of it anyway."""
        dev = rt.config.devices
        sensors = {f.window: f.id for f in (dev.fingerprints if dev else []) if f.window}
        return {
            "hall": rt.config.hall.name, "day": rt.hall.day,
            "services": [{"service": c, "name": s.name, "prefix": s.prefix}
                         for c, s in rt.hall.services.items()],
            "windows": [{"window": w.number, "name": w.name,
                         "services": [s.service for s in w.services],
                         "fingerprint": sensors.get(w.number)} for w in rt.config.windows],
            "levels": [{"level": lv.value, "name": LEVEL_NAMES[lv]} for lv in Level],
            "reasons": list(REASON_CHOICES),
        }

    @api.get("/api/v1/tickets/{ticket}/qr.svg", response_class=Response,
             responses={200: {"content": {"image/svg+xml": {}}}, **refusals(404)})
    async def ticket_qr(ticket: TicketRef) -> Response:
        """The QR code printed on the ticket, for the kiosk screen (and when paper is out)."""
        t = rt.hall.ticket(ticket, "/path/ticket")
        img = qrcode.make(_qr_url(rt).format(ticket=t.id),
                          image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=2)
        buf = io.BytesIO()
        img.save(buf)
        return Response(buf.getvalue(), media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})

    @api.get("/api/v1/pages/staff-photo/{staff_id}", response_class=Response,
             responses={200: {"content": {"image/svg+xml": {}, "image/jpeg": {},
                                          "image/png": {}}}, **refusals(401, 404)})
    async def staff_photo(staff_id: Annotated[str, PathParam(max_length=32)],
                          request: Request, who: StaffManagerOrTablet) -> Response:
        """The photo the tablet shows, for a tablet's device token in the Authorization header
        (or a staff or manager session); a drawn initial when the photo file is missing."""
        auth = request.headers.get("authorization", "")
        tablet = _tablet_for_token(rt, auth[7:].strip()) if auth.lower().startswith("bearer ") \
            else None
        if tablet is None and (who is None or who.role not in ("staff", "manager")):
            raise HTTPException(401, "a tablet's device token or a staff or manager token is "
                                "required", headers={"WWW-Authenticate": "Bearer"})
        s = rt.hall.staff.get(staff_id)
        if s is None:
            raise HTTPException(404, f"no staff member {staff_id}")
        path = Path(rt.data_dir) / s.photo if s.photo else None
        if path is not None and path.is_file():
            return FileResponse(path, headers={"Cache-Control": "max-age=300"})
        return Response(_avatar_svg(s.name), media_type="image/svg+xml")

    # ---- staff console ---------------------------------------------------------------------
    def console_for(who: Principal, window: int) -> Principal:
        if who.role == "staff" and who.window != window:
            raise DomainError("forbidden", "not-your-window",
                              f"your session is for window {who.window}, not {window}",
                              "/path/window")
        rt.hall._window(window)
        return who

    def console_view(window: int) -> dict[str, Any]:
        h = rt.hall
        w = window_view(h, window)
        waiting = sorted((t for s in w["services"] for t in h.waiting(s)), key=h._fifo_key)
        svc = services.ratings
        pending = svc.pending_for(window) if svc else None
        staff = h.staff.get(w["staff"]) if w["staff"] else None
        return {
            "now": h.local().isoformat(timespec="seconds"),
            "window": w, "staff_name": staff.name if staff else None,
            "waiting": [ticket_view(h, t) for t in waiting[:50]], "waiting_total": len(waiting),
            # today's no-shows at this window, newest first, for 恢复 (reactivate)
            "no_shows": [ticket_view(h, t) for t in sorted(
                (t for t in day_tickets() if t.window == window and t.state == "no_show"),
                key=lambda t: t.no_show_at or t.issued_at, reverse=True)[:10]],
            "today": today.window_counts(day_tickets(), window),
            "ratings": today.rating_counts(rating_events(), window),
            "rating_pending": {"ticket": pending.ticket, "number": pending.number}
            if pending else None,
            "transfer_to": [{"service": c, "name": s.name} for c, s in h.services.items()],
        }

    @api.get("/api/v1/windows/{window}/console", responses=refusals(404))
    async def console(window: WindowNo, who: StaffOrManager) -> dict[str, Any]:
        console_for(who, window)
        return console_view(window)

    async def stream(request: Request, initial: Callable[[], list[str]],
                     render: Callable[[list[dict[str, Any]]], str]) -> AsyncIterator[bytes]:
        """Frames for the committed events; the events of one operation arrive together and
        `render` turns the whole batch into frames (one state frame for them all)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        lost = asyncio.Event()

        def offer(env: dict[str, Any]) -> None:
            try:
                queue.put_nowait(env)
            except asyncio.QueueFull:
                lost.set()

        unsubscribe = rt.bus.subscribe(f"pages-{id(queue)}", offer)
        streams["open"] += 1
        try:
            for chunk in initial():
                yield chunk.encode()
            while not await request.is_disconnected():
                if lost.is_set():
                    return  # too slow a client: the page reconnects and starts afresh
                try:
                    env = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                batch = [env]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                out = render(batch)
                if out:
                    yield out.encode()
        finally:
            streams["open"] -= 1
            unsubscribe()

    def sse(gen: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(gen, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    def bounded() -> None:
        if streams["open"] >= MAX_STREAMS:
            raise HTTPException(503, f"at most {MAX_STREAMS} page streams are open")

    @api.get("/api/v1/windows/{window}/console/stream",
             responses={200: {"content": {"text/event-stream": {}}}})
    async def console_stream(window: WindowNo, request: Request,
                             caller: StaffOrManagerStream) -> StreamingResponse:
        """SSE for the window's console: `console` frames (as GET …/console) after every
        change; `spotcheck` when a spot check (随机抽查) of this window or its staff member starts
        (and one running at connect), `spotcheck_result` when it ends. EventSource sends no
        header: the session token comes as ?token=."""
        who = console_for(caller, window)
        bounded()
        served = set(window_view(rt.hall, window)["services"])

        def concerns(env: dict[str, Any]) -> bool:
            d = env["data"]
            return d.get("window") == window or d.get("service") in served \
                or d.get("to_service") in served or env["type"] == "day.opened"

        def ours(d: dict[str, Any]) -> bool:
            return d.get("window") == window or bool(d.get("staff") and d["staff"] == who.name)

        def render(batch: list[dict[str, Any]]) -> str:
            out = [frame("spotcheck" if e["type"] == "spotcheck.started" else "spotcheck_result",
                         e["data"], e["seq"])
                   for e in batch if e["type"] in SPOT_TYPES and ours(e["data"])]
            if any(concerns(e) for e in batch if e["type"] not in SPOT_TYPES):
                out.append(frame("console", console_view(window), batch[-1]["seq"]))
            return "".join(out)

        def initial() -> list[str]:
            out = [frame("console", console_view(window))]
            sup = services.supervision
            for c in sup.spot.running() if sup is not None else []:
                v = c.view(rt.hall)
                if ours(v):
                    out.append(frame("spotcheck", v))
            return out

        return sse(stream(request, initial, render))

    # ---- hall board ------------------------------------------------------------------------
    @api.get("/api/v1/hall-board", tags=["pages"])
    async def hall_board() -> dict[str, Any]:
        """The board's view: windows, services, recent calls (newest first), the notice (the
        manager's or the central room's) and the open yellow/red floor alerts (what and where,
        as GET /api/v1/alerts has them, without who)."""
        rt.tick()
        return feed().view()

    @api.get("/api/v1/hall-board/announcement/{seq}.wav", response_class=Response,
             responses={200: {"content": {"audio/wav": {}}}, **refusals(404, 503)})
    async def announcement(seq: Annotated[int, PathParam(ge=1, le=2**53)]) -> Response:
        """The box's own announcement of a recent call (espeak-ng, as the hall's speakers say
        it), for a board that plays them. Only the recent calls: nothing else is synthesised."""
        call = next((c for c in feed().calls if c["seq"] == seq), None)
        if call is None:
            raise HTTPException(404, f"no recent call with seq {seq}")
        if services.announcer is None:
            raise HTTPException(503, "no voice on this box: it runs without devices")
        try:
            wav = await services.announcer.wav(call["number"], call["window"])
        except RuntimeError as e:
            raise HTTPException(503, f"no voice on this box: {e}") from None
        return FileResponse(wav, media_type="audio/wav")

    @api.get("/api/v1/hall-board/stream",
             responses={200: {"content": {"text/event-stream": {}}}})
    async def hall_board_stream(request: Request) -> StreamingResponse:
        """SSE: `board` frames (as GET /api/v1/hall-board) and a `call` frame before the board
        frame of each call or recall, for the big display and the announcement; a notice
        posted or cleared and an alert raised or cleared each bring a new board frame."""
        bounded()

        def render(batch: list[dict[str, Any]]) -> str:
            out = [frame("call", {"number": e["data"]["number"], "window": e["data"]["window"],
                                  "window_name": _window_name(rt, e["data"]["window"]),
                                  "recall": e["type"] == "ticket.recalled", "seq": e["seq"]})
                   for e in batch if e["type"] in CALL_TYPES]
            return "".join(out) + frame("board", feed().view(), batch[-1]["seq"])

        return sse(stream(request, lambda: [frame("board", feed().view())], render))

    # ---- manager dashboard -----------------------------------------------------------------
    @api.get("/api/v1/dashboard")
    async def dashboard(who: ManagerOrCentral) -> dict[str, Any]:
        """Windows, device health, today's figures and charts' data, for the manager."""
        h = rt.hall
        tickets = day_tickets()
        windows = []
        for n in sorted(h.windows):
            w = window_view(h, n)
            ws = h.windows[n]
            since = today.idle_since(tickets, n, ws.logged_in_at) \
                if ws.staff and not w["current"] else None
            staff = h.staff.get(ws.staff) if ws.staff else None
            windows.append({
                "window": n, "name": w["name"], "staff": ws.staff,
                "staff_name": staff.name if staff else None, "paused": ws.paused,
                "pause_reason": ws.pause_reason, "waiting": w["waiting"],
                "current": {"number": w["current"]["number"], "state": w["current"]["state"]}
                if w["current"] else None,
                "idle_since": h.local(since).isoformat(timespec="seconds") if since else None,
            })
        names = {c: s.name for c, s in h.services.items()}
        figures = today.ticket_counts(tickets)
        ratings = today.rating_counts(rating_events())
        by_service = today.by_service(tickets, names)
        source, alerts = "pages", []
        sup = services.supervision
        if sup is not None and h.day:
            # The supervision statistics (edge/domain/stats.py, the module the central room runs
            # too), so the manager reads the same figures as the room; "waiting" and the hours
            # are the pages' own (from today's tickets in memory).
            day = date.fromisoformat(h.day)
            st = await asyncio.to_thread(sup.stats, day, day, "service")
            tot = st["total"]
            figures.update({k: tot[k] for k in ("tickets", "served", "no_shows", "transferred",
                                                "avg_wait_ms", "p90_wait_ms",
                                                "avg_service_ms")})
            ratings.update(
                rated=tot["rated"], unrated=tot["unrated"],
                satisfaction_rate=_fraction(tot["satisfaction_rate"]),
                rated_share=_fraction(tot["rated_share"]),
                levels={k: v for k, v in tot["ratings"].items() if v})
            per = {str(r["key"]): r for r in st["rows"]}
            for row in by_service:
                row["tickets"] = per.get(row["service"], {}).get("tickets", 0)
            source, alerts = "stats", sup.open_alerts()
        return {
            "hall": rt.config.hall.name, "day": h.day,
            "now": h.local().isoformat(timespec="seconds"),
            "windows": windows, "devices": rt.health.snapshot(),
            "today": figures, "ratings": ratings, "figures_from": source, "alerts": alerts,
            "by_hour": today.by_hour(tickets, h.local().tzinfo),  # type: ignore[arg-type]
            "by_service": by_service,
            # the supervision's monthly summary: GET /api/v1/reports/attendance (reports.py)
            "reports": [{"title": "月度考勤汇总", "href": "/api/v1/reports/attendance?month="}]
            if sup is not None else [],
        }

    @api.get("/api/v1/tickets/{ticket}/timeline", responses=refusals(404))
    async def timeline(ticket: TicketRef, who: ManagerOrCentral) -> dict[str, Any]:
        """Every journal event of a ticket (by id or today's number), oldest first; a transfer
        links the ticket before and after it."""
        t = rt.hall.ticket(ticket.strip().upper(), "/path/ticket")
        ids = {t.id}
        if t.transferred_from:
            ids.add(t.transferred_from)
        if t.transferred_to:
            ids.add(t.transferred_to)
        events = [e for e in rt.store.events_since_day_opened([])
                  if e["data"].get("ticket") in ids or e["data"].get("to_ticket") in ids]
        return {"ticket": ticket_view(rt.hall, t), "events": events}

    return api
