"""Fingerprint sensors at windows (enrolment, spot checks 随机抽查, login) and attendance."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import Field

from edge.api.auth import Principal, Roles
from edge.api.deps import ApiContext, Ctx
from edge.api.problems import problem
from edge.api.spec import refusals
from edge.api.views import Body
from edge.api.windows import start_session
from edge.domain.errors import DomainError
from edge.sensors import FingerprintSensor, SensorFailure

router = APIRouter(tags=["fingerprint and attendance"])
SENSOR_STATUS = {"sensor-timeout": 504, "finger-timeout": 408, "sensor-offline": 503,
                 "sensor-refused": 422, "unknown-staff": 404, "library-full": 409,
                 "sensor-busy": 409, "sensor-preempted": 409}
SENSOR_REFUSALS = refusals(404, 408, 409, 422, 500, 503, 504)
SensorId = Annotated[str, PathParam(max_length=64)]


class EnrolBody(Body):
    staff_id: str = Field(min_length=1, max_length=32)


class IdentifyBody(Body):
    purpose: Literal["spot_check", "login"] = "spot_check"


def _sensor(ctx: ApiContext, sensor_id: str) -> FingerprintSensor:
    drv = ctx.sensor(sensor_id)
    if drv is None:
        raise HTTPException(404, f"no running fingerprint sensor {sensor_id!r}")
    return drv


async def _run(request: Request, op: Coroutine[Any, Any, Any]) -> Any:
    """The sensor operation, for as long as the caller waits: a caller who gives up (closes
    the connection) releases the sensor at once. A login pre-empted by a spot check is 409."""
    work = asyncio.ensure_future(op)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()  # the caller left: stop holding the sensor
            await asyncio.gather(work, return_exceptions=True)
    if work.cancelled():
        code, detail = ("sensor-preempted", "a spot check took the sensor") \
            if not gone.done() or gone.cancelled() else ("gone", "the caller left")
        return _sensor_problem(request, SensorFailure(code, detail))
    try:
        return work.result()
    except SensorFailure as e:
        return _sensor_problem(request, e)


def _sensor_problem(request: Request, e: SensorFailure) -> Any:
    return problem(SENSOR_STATUS.get(e.code, 500), e.code,
                   e.code.replace("-", " ").capitalize(), e.detail, request.url.path)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post("/api/v1/fingerprints/{sensor_id}/enrol", status_code=201,
             responses=SENSOR_REFUSALS, dependencies=[Depends(Roles("manager"))])
async def enrol(sensor_id: SensorId, body: EnrolBody, request: Request, ctx: Ctx) -> Any:
    out = await _run(request, _sensor(ctx, sensor_id).enrol(body.staff_id))
    return out if not isinstance(out, int) else {"sensor": sensor_id, "page": out,
                                                  "staff": body.staff_id}


@router.post("/api/v1/fingerprints/{sensor_id}/identify", responses=SENSOR_REFUSALS)
async def identify(sensor_id: SensorId, body: IdentifyBody, request: Request, ctx: Ctx,
                   who: Annotated[Principal, Depends(Roles("manager", "central", "staff"))]
                   ) -> Any:
    """随机抽查 by a manager or the central room; a staff login check at the sensor's window."""
    drv = _sensor(ctx, sensor_id)
    if who.role == "staff" and who.window != drv.window:
        raise DomainError("forbidden", "not-your-window",
                          f"sensor {sensor_id} is at window {drv.window}", "sensor")
    return await _run(request, drv.identify(body.purpose))


@router.post("/api/v1/windows/{window}/fingerprint-login", status_code=201,
             responses={**SENSOR_REFUSALS, **refusals(401, 403)})
async def fingerprint_login(window: Annotated[int, PathParam(ge=1, le=9999)],
                            request: Request, ctx: Ctx,
                            who: Annotated[Principal, Depends(Roles("console"))]) -> Any:
    """Staff log in at a window with a finger on its sensor instead of a PIN.

    Started by the window's own console (a device paired for that window, POST
    /api/v1/devices kind=console): nobody else can hold the sensor. A login never waits
    for a busy sensor (409 sensor-busy), a spot check pre-empts it (409 sensor-preempted),
    and it ends when the console gives up."""
    if who.window != window:
        raise DomainError("forbidden", "not-your-window",
                          f"this console belongs to window {who.window}", "window")
    drv = ctx.sensor_at(window)
    if drv is None:
        raise HTTPException(404, f"window {window} has no fingerprint sensor")
    found = await _run(request, drv.identify("login"))
    if not isinstance(found, dict):
        return found  # the sensor's problem response
    if not found["matched"]:
        raise HTTPException(401, "this finger is not enrolled")
    return await start_session(ctx, found["staff"], window, via="fingerprint")


@router.get("/api/v1/attendance", dependencies=[Depends(Roles("manager", "central"))])
async def attendance(ctx: Ctx, day: Annotated[str | None, Query(
        pattern=r"^\d{4}-\d{2}-\d{2}$")] = None) -> dict[str, Any]:
    """Punches of a day (default today), for the supervision room's checks."""
    want = day or ctx.rt.hall.day or ""
    rows = [e for e in ctx.rt.store.events_after(0, 10**9, ["punch.recorded"])
            if e["data"]["at"].startswith(want)]
    return {"day": want, "punches": [{**e["data"], "seq": e["seq"]} for e in rows]}
