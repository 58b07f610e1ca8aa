"""Is the box alive, how are its devices, who am I."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from edge.api.auth import Principal, Roles, identify
from edge.api.deps import Ctx
from edge.api.spec import refusals

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness for systemd and load balancers: the journal head and the unsent outbox."""
    return {"ok": True, "seq": ctx.rt.store.head_seq,
            "outbox_pending": ctx.rt.store.outbox_pending(),
            "streams": {"clients": ctx.streams.clients, "cut": ctx.streams.cuts,
                        "refused": ctx.streams.refused}}


@router.get("/api/v1/health")
async def health(ctx: Ctx, who: Annotated[Principal, Depends(
        Roles("kiosk", "staff", "manager", "central"))]) -> dict[str, Any]:
    return {"devices": ctx.rt.health.snapshot()}


@router.get("/api/v1/whoami", responses=refusals(401))
async def whoami(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Who the bearer token belongs to (401 without a valid one)."""
    who = identify(request, ctx)
    if who is None:
        raise HTTPException(401, "no valid token", headers={"WWW-Authenticate": "Bearer"})
    return {"role": who.role, "name": who.name, "window": who.window}
