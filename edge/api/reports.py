"""Supervision routes: attendance reports, statistics, leave, alerts, spot checks.

Managers and the central room read; managers enter leave and acknowledge bad-rating alerts.
Every refusal is problem+json with the pointer of the failing parameter (the domain names
the field; edge.api.problems finds it in the request).
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edge.api.auth import Principal, Roles
from edge.api.deps import ApiContext, Ctx
from edge.api.spec import refusals
from edge.domain import stats as stats_mod
from edge.domain.errors import DomainError
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


router = APIRouter(prefix="/api/v1", tags=["supervision"])
Readers = Depends(Roles("manager", "central"))
Manager = Annotated[Principal, Depends(Roles("manager"))]
XLSX_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The month's attendance: JSON, CSV or XLSX by `format`",
    "content": {"application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}},
                XLSX: {"schema": {"type": "string", "format": "binary"}}}},
    **refusals(404)}


def svc(ctx: ApiContext) -> Supervision:
    if ctx.services.supervision is None:
        raise DomainError("not_found", "no-supervision", "supervision is not running on this box")
    return ctx.services.supervision


@router.get("/reports/attendance", response_class=Response, responses=XLSX_RESPONSES,
            dependencies=[Readers])
async def attendance_report(ctx: Ctx, month: Annotated[str, Query(max_length=7)],
                            format: Annotated[Literal["csv", "xlsx", "json"], Query()] = "json"
                            ) -> Response:
    rt = ctx.rt
    # Reading a month of punches and judging it: off the loop.
    s = await asyncio.to_thread(svc(ctx).month_summary, month)
    name = f"attendance-{rt.config.hall.site}-{s.month}"
    if format == "csv":
        # With a BOM, so spreadsheet programs read the Chinese headers as UTF-8.
        return Response(("\ufeff" + summary_csv(s)).encode("utf-8"),
                        media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if format == "xlsx":
        return Response(summary_xlsx(s, rt.config.hall.name), media_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'})
    return Response(json.dumps(s.to_data(), ensure_ascii=False), media_type="application/json")


@router.get("/stats", responses=refusals(404), dependencies=[Readers])
async def stats(ctx: Ctx, from_: Annotated[str, Query(alias="from", max_length=10)],
                to: Annotated[str, Query(max_length=10)],
                by: Annotated[str, Query(max_length=10)] = "window") -> dict[str, Any]:
    start = stats_mod.parse_date(from_, "from")
    end = stats_mod.parse_date(to, "to")
    # Up to a year of events: off the loop.
    return await asyncio.to_thread(svc(ctx).stats, start, end, by)


@router.post("/leaves", status_code=201, responses=refusals(404, 409))
async def leave(body: LeaveRequest, ctx: Ctx, who: Manager) -> dict[str, Any]:
    return await svc(ctx).record_leave(body.staff, body.from_, body.to, body.kind, body.note,
                                       who.name)


@router.get("/alerts", responses=refusals(404),
            dependencies=[Depends(Roles("staff", "manager", "central"))])
async def alerts(ctx: Ctx) -> dict[str, Any]:
    return {"alerts": svc(ctx).open_alerts()}


@router.post("/alerts/{alert}/acknowledge", responses=refusals(404, 409))
async def acknowledge(alert: Annotated[str, PathParam(max_length=160)], ctx: Ctx,
                      who: Manager) -> dict[str, Any]:
    return await svc(ctx).acknowledge(alert, who.name)


@router.get("/windows/{window}/spotcheck", responses=refusals(404))
async def window_spot_check(window: Annotated[int, PathParam(ge=1, le=9999)], ctx: Ctx,
                            who: Annotated[Principal, Depends(
                                Roles("staff", "manager", "central"))]) -> dict[str, Any]:
    """What the window's console shows: a running check asks for the finger now."""
    if who.role == "staff" and who.window != window:
        raise DomainError("forbidden", "not-your-window",
                          f"your session is for window {who.window}", "window")
    running = [c.view(ctx.rt.hall) for c in svc(ctx).spot.running() if c.window == window]
    return {"window": window, "running": running[0] if running else None}


@router.post("/spotchecks", responses=refusals(404, 409), dependencies=[Readers])
async def spot_check(body: SpotCheckRequest, ctx: Ctx) -> dict[str, Any]:
    """Runs until the staff member verified or the deadline passed (≤ 30 minutes)."""
    return await svc(ctx).spot_check(window=body.window, staff=body.staff,
                                      deadline=body.deadline, note=body.note)
