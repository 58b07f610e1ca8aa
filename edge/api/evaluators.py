"""Tablet evaluators (评价器) over WebSocket, the staff page's rating request, rating stats.

Protocol at `/ws/evaluator`: JSON text frames, one object each, with a "type".

Tablet → box:
  {"type": "login", "window": 5, "token": "<device token>"}
  {"type": "staff"}                          who serves at my window (photo, name, number)
  {"type": "submit", "ticket": "20261123-A023", "level": "satisfied", "reason": null}
      level: very_satisfied | satisfied | basically_satisfied | dissatisfied |
             very_dissatisfied (or the Chinese names); a bad level needs a reason.
  {"type": "ping"}
Box → tablet:
  {"type": "welcome", "window", "device", "staff", "pending", "levels", "reasons"}
  {"type": "staff", "window", "staff": {"id", "name", "department", "photo_url"} | null}
  {"type": "rate", "ticket", "number", "window", "staff", "deadline"}   (pushed: please rate)
  {"type": "idle", "ticket", "result"}      (pushed: the request ended: rated or 未评价)
  {"type": "accepted", "ticket", "level", "level_name"}
  {"type": "rejected", "rule", "detail", "ticket"}     (a broken binding rule; counted)
  {"type": "error", "code", "detail"}       (a bad message; nothing changed)
  {"type": "pong"}
A tablet is bound to the window of its device token ([[devices.evaluators]] kind = "tablet").
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from edge.api.auth import Principal, Roles, require, sha256_hex
from edge.api.deps import ApiContext, Ctx
from edge.api.limits import client_address
from edge.api.spec import refusals
from edge.config.supervision_devices import EvaluatorConfig
from edge.domain.errors import DomainError
from edge.domain.rating import (
    LEVEL_NAMES,
    REASON_CHOICES,
    UNRATED,
    Level,
    RatingRequest,
    Submission,
    parse_level,
)
from edge.health import DeviceHealth
from edge.ratings import RATING_TYPES
from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
MAX_MESSAGE = 4096  # bytes; a rating is tiny, anything bigger is abuse
MAX_FAILED_LOGINS = 3


class RatingRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ticket: str | None = Field(default=None, min_length=1, max_length=40)


class BadMessage(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _tablets(rt: HallRuntime) -> list[EvaluatorConfig]:
    dev = rt.config.devices
    return [e for e in (dev.evaluators if dev else []) if e.kind == "tablet"]


def staff_card(rt: HallRuntime, staff_id: str | None) -> dict[str, Any] | None:
    """What the tablet shows: photo, name, number (工号), department."""
    if staff_id is None:
        return None
    s = rt.hall.staff.get(staff_id)
    if s is None:
        return {"id": staff_id, "name": staff_id, "department": "", "photo_url": None}
    return {"id": s.id, "name": s.name, "department": s.department,
            "photo_url": f"/api/v1/evaluator/photo/{s.id}" if s.photo else None}


def _rate_frame(rt: HallRuntime, r: RatingRequest) -> dict[str, Any]:
    return {"type": "rate", "ticket": r.ticket, "number": r.number, "window": r.window,
            "staff": staff_card(rt, r.staff),
            "deadline": rt.hall.local(r.deadline).isoformat(timespec="seconds")}


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...],
           required: bool = True) -> Any:
    v = msg.get(name)
    if v is None:
        if required:
            raise BadMessage("missing-field", f"{name!r} is required")
        return None
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is int):
        raise BadMessage("bad-field", f"{name!r} has the wrong type")
    return v


router = APIRouter(tags=["evaluators"])


@router.post("/api/v1/windows/{window}/rating-request", status_code=201,
             responses=refusals(403, 404, 409))
async def rating_request(window: Annotated[int, PathParam(ge=1, le=9999)],
                         body: RatingRequestBody, ctx: Ctx,
                         who: Annotated[Principal, Depends(Roles("staff"))]) -> dict[str, Any]:
    """Ask the window's evaluator to rate a ticket (default: the last one finished there)."""
    if who.window != window:
        raise DomainError("forbidden", "not-your-window",
                          f"your session is for window {who.window}, not {window}", "window")
    svc = ctx.services.ratings
    if svc is None:
        raise DomainError("conflict", "ratings-off", "ratings are not configured "
                          "([rating] is absent)")
    r = await svc.request(window, body.ticket, who.name)
    return _rate_frame(ctx.rt, r)


@router.get("/api/v1/ratings/summary", dependencies=[Depends(Roles("manager", "central"))])
async def summary(ctx: Ctx) -> dict[str, Any]:
    return rating_summary(ctx.rt)


@router.get("/api/v1/evaluator/photo/{staff_id}",
            responses={200: {"description": "The staff member's photo",
                             "content": {"image/*": {"schema": {"type": "string",
                                                                "format": "binary"}}}},
                       **refusals(401, 404)})
async def photo(staff_id: Annotated[str, PathParam(max_length=32)], request: Request,
                ctx: Ctx) -> FileResponse:
    """For the tablet (its device token as the bearer; the page fetches the photo with the
    header) and for staff and managers."""
    rt = ctx.rt
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not _tablet_for_token(rt, token) and not _is_staff_or_manager(request, ctx):
        raise HTTPException(401, "an evaluator or staff token is required")
    s = rt.hall.staff.get(staff_id)
    path = Path(rt.data_dir) / s.photo if s and s.photo else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"no photo for {staff_id}")
    return FileResponse(path)


@router.websocket("/ws/evaluator")
async def ws(sock: WebSocket, ctx: Ctx) -> None:
    await sock.accept()
    session = _TabletSession(ctx, sock)
    try:
        await session.run()
    except WebSocketDisconnect:
        pass
    finally:
        session.close()


def _tablet_for_token(rt: HallRuntime, token: str) -> EvaluatorConfig | None:
    if not token:
        return None
    digest = sha256_hex(token)
    for e in _tablets(rt):
        if e.token_sha256 and secrets.compare_digest(e.token_sha256, digest):
            return e
    return None


def _is_staff_or_manager(request: Request, ctx: ApiContext) -> bool:
    try:
        require(request, ctx, "staff", "manager")
    except HTTPException:
        return False
    return True


class _TabletSession:
    def __init__(self, ctx: ApiContext, sock: WebSocket) -> None:
        self.rt = ctx.rt
        self.svc = ctx.services.ratings
        self.sock = sock
        self.connected = ctx.tablets
        self.live = ctx.tablet_sessions
        self.guard = ctx.guards.evaluators
        self.address = client_address(sock.scope)
        self.device: EvaluatorConfig | None = None
        self.failed_logins = 0
        self.locked_out = False
        self._unsub: Any = None

    def close(self) -> None:
        if self._unsub:
            self._unsub()
            self._unsub = None
        if self.device is not None and self.live.get(self.device.id) is self:
            del self.live[self.device.id]
        if self.device is not None:
            n = self.connected.get(self.device.id, 1) - 1
            self.connected[self.device.id] = n
            if n <= 0:
                # Grade C: the window serves on; only its ratings are missing.
                self._health(False, "tablet disconnected")

    def _health(self, online: bool, detail: str) -> None:
        assert self.device is not None
        try:
            self.rt.health.report(DeviceHealth(self.device.id, "evaluator", online,
                                               None if online else "C", detail))
        except Exception:
            log.exception("health report for %s failed", self.device.id)

    async def replaced(self) -> None:
        try:
            await self.sock.close(code=4409, reason="replaced by a newer connection")
        except Exception:
            log.debug("tablet connection already gone")

    async def send(self, frame: dict[str, Any]) -> None:
        await self.sock.send_text(json.dumps(frame, ensure_ascii=False))

    async def error(self, code: str, detail: str) -> None:
        await self.send({"type": "error", "code": code, "detail": detail})

    async def run(self) -> None:
        while True:
            raw = await self.sock.receive()
            if raw["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(raw.get("code", 1000))
            text = raw.get("text")
            if text is None:
                await self.error("binary-frame", "send JSON text frames, not binary")
                continue
            if len(text.encode("utf-8")) > MAX_MESSAGE:
                await self.error("too-large", f"messages are at most {MAX_MESSAGE} bytes")
                continue
            try:
                msg = json.loads(text)
            except ValueError as e:
                await self.error("not-json", f"not JSON: {e}")
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                await self.error("bad-message", 'a message is an object with a "type"')
                continue
            try:
                await self.handle(msg)
            except BadMessage as e:
                await self.error(e.code, e.detail)
            except DomainError as e:
                await self.error(e.code, e.detail)
            if self.locked_out:
                await self.sock.close(code=4429, reason="too many failed logins; wait")
                return
            if self.failed_logins >= MAX_FAILED_LOGINS:
                await self.sock.close(code=4401, reason="too many failed logins")
                return

    async def handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "login":
            await self.login(msg)
        elif kind in ("staff", "submit"):
            if self.device is None:
                raise BadMessage("login-required", "log in with window and token first")
            if kind == "staff":
                w = self.rt.hall.windows[self.device.window]
                await self.send({"type": "staff", "window": self.device.window,
                                 "staff": staff_card(self.rt, w.staff)})
            else:
                await self.submit(msg)
        else:
            raise BadMessage("unknown-type", f"unknown message type {kind!r}; one of login, "
                             "staff, submit, ping")

    async def login(self, msg: dict[str, Any]) -> None:
        if self.device is not None:
            raise BadMessage("already-logged-in",
                             f"this connection is window {self.device.window}'s evaluator")
        window = _field(msg, "window", int)
        token = _field(msg, "token", str)
        if self.svc is None:
            raise BadMessage("ratings-off", "ratings are not configured on this box")
        # Failed guesses count per client address and per window across connections, so
        # reconnecting does not reset them.
        wait = self.guard.retry_after(self.address, window)
        if wait is not None:
            self.locked_out = True
            raise BadMessage("too-many-failures", f"too many failed logins; try again in "
                             f"{wait} s")
        dev = _tablet_for_token(self.rt, token)
        if dev is None or dev.window != window:
            self.failed_logins += 1
            self.guard.failed(self.address, window)
            if dev is None:
                raise BadMessage("bad-token", "unknown evaluator token")
            raise BadMessage("wrong-window",
                             f"this token belongs to the evaluator of window {dev.window}")
        self.device = dev
        # One live connection per tablet: the newest wins (a tablet that lost its network
        # reconnects while the box may still hold its dead socket); the older one is closed.
        old = self.live.get(dev.id)
        self.live[dev.id] = self
        if old is not None:
            asyncio.get_running_loop().create_task(old.replaced())
        self._unsub = self.rt.bus.subscribe(f"tablet-{dev.id}-{id(self)}", self._on_event)
        self.connected[dev.id] = self.connected.get(dev.id, 0) + 1
        self._health(True, "tablet connected")
        pending = self.svc.pending_for(window)
        await self.send({
            "type": "welcome", "window": window, "device": dev.id,
            "staff": staff_card(self.rt, self.rt.hall.windows[window].staff),
            "pending": _rate_frame(self.rt, pending) if pending else None,
            "levels": [{"level": lv.value, "name": LEVEL_NAMES[lv],
                        "needs_reason": lv in (Level.DISSATISFIED, Level.VERY_DISSATISFIED)}
                       for lv in Level],
            "reasons": list(REASON_CHOICES),
        })

    async def submit(self, msg: dict[str, Any]) -> None:
        assert self.device is not None and self.svc is not None
        level = parse_level(_field(msg, "level", str))
        ticket = _field(msg, "ticket", str, required=False)
        reason = _field(msg, "reason", str, required=False)
        if reason is not None and len(reason) > 200:
            raise BadMessage("bad-field", "'reason' is at most 200 characters")
        out = await self.svc.submit(Submission(self.device.window, level, "tablet", self.device.id,
                                         ticket, reason))
        if out.accepted:
            await self.send({"type": "accepted", "ticket": out.ticket, "level": level.value,
                             "level_name": LEVEL_NAMES[level]})
        else:
            await self.send({"type": "rejected", "rule": out.rule, "detail": out.detail,
                             "ticket": out.ticket})

    def _on_event(self, env: dict[str, Any]) -> None:
        """Push what concerns this window; sent from a task so the bus never waits."""
        assert self.device is not None
        d = env["data"]
        if d.get("window") != self.device.window:
            return
        frame: dict[str, Any] | None = None
        if env["type"] == "rating.requested" and self.svc:
            r = self.svc.pending_for(self.device.window)
            if r is not None and r.ticket == d["ticket"]:
                frame = _rate_frame(self.rt, r)
        elif env["type"] in ("rating.submitted", "rating.missing"):
            frame = {"type": "idle", "ticket": d["ticket"],
                     "result": d.get("level_name", UNRATED)}
        elif env["type"] in ("staff.logged_in", "staff.logged_out"):
            staff = d["staff"] if env["type"] == "staff.logged_in" else None
            frame = {"type": "staff", "window": self.device.window,
                     "staff": staff_card(self.rt, staff)}
        if frame is not None:
            asyncio.get_running_loop().create_task(self._push(frame))

    async def _push(self, frame: dict[str, Any]) -> None:
        try:
            await self.send(frame)
        except Exception:
            log.debug("tablet %s gone before a push", self.device and self.device.id)


def rating_summary(rt: HallRuntime) -> dict[str, Any]:
    """Today's ratings per window and per staff member, 未评价 and refusals included."""
    events = rt.store.events_since_day_opened(RATING_TYPES)
    per_window: dict[int, dict[str, Any]] = {}
    per_staff: dict[str, dict[str, Any]] = {}
    rejected: dict[str, int] = {}

    def bucket(table: dict[Any, dict[str, Any]], key: Any) -> dict[str, Any]:
        return table.setdefault(key, {"ratings": {lv.value: 0 for lv in Level},
                                      "unrated": 0, "requested": 0, "score_sum": 0})

    for env in events:
        d = env["data"]
        if env["type"] == "rating.rejected":
            rejected[d["rule"]] = rejected.get(d["rule"], 0) + 1
            continue
        for b in (bucket(per_window, d["window"]), bucket(per_staff, d["staff"])):
            if env["type"] == "rating.requested":
                b["requested"] += 1
            elif env["type"] == "rating.submitted":
                b["ratings"][d["level"]] += 1
                b["score_sum"] += d["score"]
            else:
                b["unrated"] += 1
    return {"day": rt.hall.day, "windows": {str(k): v for k, v in sorted(per_window.items())},
            "staff": dict(sorted(per_staff.items())), "rejected": rejected}
