"""Supervision routes: attendance reports, statistics, leave, alerts, spot checks.

Managers and the central room read; managers enter leave and acknowledge bad-rating alerts.
Every refusal is problem+json with the pointer of the failing parameter.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edge.api.auth import require
from edge.assembly import HallServices
from edge.domain import stats as stats_mod
from edge.runtime import HallRuntime
from edge.supervision import Supervision, summary_csv, summary_xlsx

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class LeaveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    staff: str = Field(min_length=1, max_length=32)
    from_: date = Field(alias="from")
    to: date
    kind: str = Field(min_length=1, max_length=16)
    note: str | None = Field(default=None, max_length=200)


class SpotCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int | None = Field(default=None, ge=1, le=9999)
    staff: str | None = Field(default=None, min_length=1, max_length=32)
    deadline: AwareDatetime
    note: str | None = Field(default=None, max_length=200)


def router(rt: HallRuntime, services: HallServices) -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    def svc() -> Supervision:
        if services.supervision is None:
            from edge.domain.errors import DomainError

            raise DomainError("not_found", "no-supervision",
                              "supervision is not running on this box")
        return services.supervision

    @r.get("/reports/attendance")
    async def attendance_report(
            request: Request, month: Annotated[str, Query(max_length=7)],
            format: Annotated[Literal["csv", "xlsx", "json"], Query()] = "json") -> Response:
        require(request, rt, "manager", "central")
        # Reading a month of punches and judging it: off the loop.
        s = await asyncio.to_thread(svc().month_summary, month)
        name = f"attendance-{rt.config.hall.site}-{s.month}"
        if format == "csv":
            # With a BOM, so spreadsheet programs read the Chinese headers as UTF-8.
            return Response(("\ufeff" + summary_csv(s)).encode("utf-8"),
                            media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
        if format == "xlsx":
            return Response(summary_xlsx(s, rt.config.hall.name), media_type=XLSX,
                            headers={"Content-Disposition":
                                     f'attachment; filename="{name}.xlsx"'})
        import json

        return Response(json.dumps(s.to_data(), ensure_ascii=False),
                        media_type="application/json")

    @r.get("/stats")
    async def stats(request: Request,
                    from_: Annotated[str, Query(alias="from", max_length=10)],
                    to: Annotated[str, Query(max_length=10)],
                    by: Annotated[str, Query(max_length=10)] = "window") -> dict[str, Any]:
        require(request, rt, "manager", "central")
        start = stats_mod.parse_date(from_, "/query/from")
        end = stats_mod.parse_date(to, "/query/to")
        # Up to a year of events: off the loop.
        return await asyncio.to_thread(svc().stats, start, end, by)

    @r.post("/leaves", status_code=201)
    async def leave(body: LeaveRequest, request: Request) -> dict[str, Any]:
        who = require(request, rt, "manager")
        return await svc().record_leave(body.staff, body.from_, body.to, body.kind, body.note,
                                        who.name)

    @r.get("/alerts")
    async def alerts(request: Request) -> dict[str, Any]:
        require(request, rt, "staff", "manager", "central")
        return {"alerts": svc().open_alerts()}

    @r.post("/alerts/{alert}/acknowledge")
    async def acknowledge(alert: Annotated[str, PathParam(max_length=160)],
                          request: Request) -> dict[str, Any]:
        who = require(request, rt, "manager")
        return await svc().acknowledge(alert, who.name)

    @r.get("/windows/{window}/spotcheck")
    async def window_spot_check(window: Annotated[int, PathParam(ge=1, le=9999)],
                                request: Request) -> dict[str, Any]:
        """What the window's console shows: a running check asks for the finger now."""
        who = require(request, rt, "staff", "manager", "central")
        if who.role == "staff" and who.window != window:
            from edge.domain.errors import DomainError

            raise DomainError("forbidden", "not-your-window",
                              f"your session is for window {who.window}", "/path/window")
        running = [c.view(rt.hall) for c in svc().spot.running() if c.window == window]
        return {"window": window, "running": running[0] if running else None}

    @r.post("/spotchecks")
    async def spot_check(body: SpotCheckRequest, request: Request) -> dict[str, Any]:
        """Runs until the staff member verified or the deadline passed (≤ 30 minutes)."""
        require(request, rt, "manager", "central")
        from edge.domain.errors import DomainError

        try:
            return await svc().spot_check(window=body.window, staff=body.staff,
                                          deadline=body.deadline, note=body.note)
        except DomainError as e:
            if e.pointer and not e.pointer.startswith("/body"):
                e.pointer = "/body" + e.pointer
            raise

    return r
