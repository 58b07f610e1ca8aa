"""Video routes: the clip of a ticket or of a time range, signed clip urls, who watched what.

Only the roles of `[video] roles` (manager, central by default) may ask for clips; the clip url
itself is the credential (signed, expiring), so a browser's <video> element can fetch it with
Range requests. Every refusal is problem+json with a pointer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edge.api.auth import Principal, Roles
from edge.api.deps import ApiContext, Ctx
from edge.api.journal import MAX_SEQ
from edge.api.problems import problem
from edge.api.spec import refusals
from edge.recorder.clips import ClipRefused
from edge.recorder.service import VideoService

router = APIRouter(prefix="/api/v1", tags=["video"])
# The widest set `[video] roles` may name; the section narrows it per box.
Viewer = Annotated[Principal, Depends(Roles("manager", "central"))]
MP4 = {200: {"description": "The clip (Range requests answer 206)",
             "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TicketClipRequest(_Body):
    padding_seconds: int | None = Field(default=None, ge=0, le=600)
    partial: bool = False  # export the recorded parts of a range with holes


class RangeClipRequest(_Body):
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime
    partial: bool = False


def _refused(e: ClipRefused, request: Request) -> JSONResponse:
    errors = [{"pointer": e.pointer, "detail": e.detail}] if e.pointer else None
    return problem(e.status, e.code, e.code.replace("-", " ").capitalize(), e.detail,
                   request.url.path, errors)


def _video(ctx: ApiContext) -> VideoService:
    svc: VideoService | None = ctx.services.video
    if svc is None:
        raise ClipRefused(404, "no-video", "this box records no cameras")
    return svc


def _allowed(svc: VideoService, who: Principal) -> None:
    if who.role not in svc.cfg.roles:
        raise ClipRefused(403, "forbidden", f"role {who.role} may not see video on this box")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post("/tickets/{ticket}/video", status_code=201, response_model=None,
             responses=refusals(401, 403, 404, 409, 422, 429))
async def ticket_clip(ticket: Annotated[str, PathParam(max_length=40)], request: Request,
                      ctx: Ctx, who: Viewer, body: TicketClipRequest | None = None) -> Any:
    b = body or TicketClipRequest()
    try:
        svc = _video(ctx)
        _allowed(svc, who)
        cam, start, end = svc.ticket_range(ticket, b.padding_seconds)
        issued = await svc.export(cam, start, end, ticket=ticket, partial=b.partial,
                                  who=f"{who.role}:{who.name}")
    except ClipRefused as e:
        return _refused(e, request)
    return svc.answer(issued, _base(request))


@router.post("/cameras/{camera}/video", status_code=201, response_model=None,
             responses=refusals(401, 403, 404, 422, 429))
async def range_clip(camera: Annotated[str, PathParam(max_length=32)], body: RangeClipRequest,
                     request: Request, ctx: Ctx, who: Viewer) -> Any:
    try:
        svc = _video(ctx)
        _allowed(svc, who)
        issued = await svc.export(camera, body.from_.timestamp(), body.to.timestamp(),
                                  partial=body.partial, who=f"{who.role}:{who.name}")
    except ClipRefused as e:
        return _refused(e, request)
    return svc.answer(issued, _base(request))


@router.get("/video/clips/{clip:path}", response_model=None,
            responses={**MP4, **refusals(400, 403, 404, 410)})
async def get_clip(clip: str, request: Request, ctx: Ctx,
                   exp: Annotated[str, Query(max_length=20)] = "",
                   sig: Annotated[str, Query(max_length=64)] = "") -> Any:
    """The signed url is the credential: no token, so a <video> element can play it."""
    try:
        svc = _video(ctx)
        client = request.client.host if request.client else "?"
        path = svc.open_clip(clip, exp, sig, client)
    except ClipRefused as e:
        return _refused(e, request)
    return FileResponse(path, media_type="video/mp4",
                        headers={"Cache-Control": "private, no-store"})


@router.get("/video/accesses", responses=refusals(401, 403))
async def accesses(ctx: Ctx, _who: Viewer, after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    events = ctx.rt.store.events_after(after_seq, limit, ["video.accessed", "video.exported",
                                                          "video.refused"])
    return {"accesses": [{"seq": e["seq"], "ts": e["ts"], "type": e["type"], **e["data"]}
                         for e in events]}


@router.get("/cameras", responses=refusals(401, 403))
async def cameras(ctx: Ctx, _who: Viewer) -> dict[str, Any]:
    svc: VideoService | None = ctx.services.video
    if svc is None:
        return {"cameras": []}
    return {"cameras": [{"id": cid, "window": rec.cfg.window, "recording": rec.recording,
                         "last_end": svc.iso(rec.last_end) if rec.last_end else None,
                         **rec.metrics()} for cid, rec in svc.recorders.items()]}
