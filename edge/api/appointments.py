"""Appointments from the booking platform (预约) and their check-in at a kiosk."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from pydantic import AwareDatetime, Field

from edge.api.auth import Principal, Roles
from edge.api.deps import Ctx
from edge.api.spec import refusals
from edge.api.tickets import RETRIED, issue_and_print
from edge.api.views import Body

router = APIRouter(tags=["appointments"])


class AppointmentRequest(Body):
    code: str = Field(pattern=r"^[A-Za-z0-9-]{4,32}$")
    service: str = Field(min_length=1, max_length=16)
    slot_start: AwareDatetime
    slot_end: AwareDatetime


@router.post("/api/v1/appointments", status_code=201, responses=refusals(404, 409),
             dependencies=[Depends(Roles("central", "manager"))])
async def book(body: AppointmentRequest, ctx: Ctx) -> dict[str, Any]:
    rt = ctx.rt
    await rt.run(lambda h: (None, h.book(body.code, body.service, body.slot_start,
                                         body.slot_end)))
    a = rt.hall.appointments[body.code]
    return {"code": a.code, "service": a.service, "state": a.state.value,
            "slot_start": a.slot_start.isoformat(), "slot_end": a.slot_end.isoformat()}


@router.post("/api/v1/appointments/{code}/check-in", status_code=201,
             responses={**RETRIED,
                        **refusals(404, 409)})
async def check_in(code: Annotated[str, PathParam(max_length=32)], request: Request,
                   response: Response, ctx: Ctx,
                   who: Annotated[Principal, Depends(Roles("kiosk", "manager"))]
                   ) -> dict[str, Any]:
    view, response.status_code = await issue_and_print(ctx, request, who,
                                                       lambda h: h.check_in(code))
    return view
