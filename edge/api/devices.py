"""Pairing: a manager issues a device token to a kiosk or a window console.

The token is shown once; the device's page keeps it in localStorage and sends it as a bearer
header. A paired kiosk takes tickets without the per-address limit; a window console starts
fingerprint logins at its window. Pairing and unpairing are events.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from pydantic import Field

from edge.api.auth import Principal, Roles, new_token, sha256_hex
from edge.api.deps import Ctx
from edge.api.spec import refusals
from edge.api.views import Body
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.store import Store

router = APIRouter(tags=["devices"])
Manager = Annotated[Principal, Depends(Roles("manager"))]
DeviceName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class PairRequest(Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    kind: Literal["kiosk", "console"]
    window: int | None = Field(default=None, ge=1, le=9999)


@router.post("/api/v1/devices", status_code=201, responses=refusals(404, 409))
async def pair(body: PairRequest, ctx: Ctx, who: Manager) -> dict[str, Any]:
    """Pair a kiosk or a window's console; the answer carries its token, once."""
    rt = ctx.rt
    if body.kind == "console":
        if body.window is None:
            raise DomainError("invalid", "window-required", "a console belongs to a window",
                              "window")
        rt.hall._window(body.window)
    elif body.window is not None:
        raise DomainError("invalid", "no-window", "a kiosk belongs to no window", "window")
    if any(d["name"] == body.name for d in rt.store.paired_devices()) or any(
            t.name == body.name for t in rt.config.api.tokens):
        raise DomainError("conflict", "device-exists", f"a device {body.name!r} exists; "
                          "unpair it first", "name")
    token = new_token()
    await rt.record([DomainEvent("device.paired", {"device": body.name, "kind": body.kind,
                                                   "window": body.window, "by": who.name})],
                    writes=[Store.pair_device(body.name, body.kind, body.window,
                                              sha256_hex(token), rt.clock.now().isoformat(),
                                              who.name)])
    return {"name": body.name, "kind": body.kind, "window": body.window, "token": token}


@router.get("/api/v1/devices", dependencies=[Depends(Roles("manager"))])
async def devices(ctx: Ctx) -> dict[str, Any]:
    return {"devices": ctx.rt.store.paired_devices()}


@router.delete("/api/v1/devices/{name}", responses=refusals(404))
async def unpair(name: DeviceName, ctx: Ctx, who: Manager) -> dict[str, Any]:
    rt = ctx.rt
    if not any(d["name"] == name for d in rt.store.paired_devices()):
        raise HTTPException(404, f"no paired device {name!r}")
    await rt.record([DomainEvent("device.unpaired", {"device": name, "by": who.name})],
                    writes=[Store.unpair_device(name)])
    return {"name": name, "unpaired": True}
