"""`cmd/video.export` from the central room: a clip's signed url, or the clip uploaded by PUT."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, Field, model_validator

from edge.link.commands import Args, CommandContext, CommandError, _args
from edge.recorder.clips import ClipRefused
from edge.recorder.service import VideoService

PUT_TIMEOUT_S = 300.0


class ExportArgs(Args):
    ticket: str | None = Field(default=None, min_length=1, max_length=40)
    camera: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    padding_seconds: int | None = Field(default=None, ge=0, le=600)
    partial: bool = False
    put_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=2000)

    @model_validator(mode="after")
    def _one_target(self) -> ExportArgs:
        by_range = self.camera is not None or self.from_ is not None or self.to is not None
        if (self.ticket is None) == (not by_range):
            raise ValueError("give either ticket, or camera with from and to")
        if by_range and None in (self.camera, self.from_, self.to):
            raise ValueError("a range needs camera, from and to")
        return self


async def cmd_video_export(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    a: ExportArgs = _args(ExportArgs, args)
    svc: VideoService | None = getattr(ctx.services, "video", None)
    if svc is None:
        raise CommandError("unavailable", "this box records no cameras")
    try:
        if a.ticket is not None:
            cam, start, end = svc.ticket_range(a.ticket, a.padding_seconds)
        else:
            assert a.camera and a.from_ and a.to
            cam, start, end = a.camera, a.from_.timestamp(), a.to.timestamp()
        issued = await svc.export(cam, start, end, ticket=a.ticket, partial=a.partial,
                                  who=f"central:{ctx.command_id}")
    except ClipRefused as e:
        raise CommandError(e.code, e.detail) from None
    api = ctx.rt.config.api
    base = svc.cfg.public_url or f"http://{api.host}:{api.port}"
    out = svc.answer(issued, base.rstrip("/"))
    if a.put_url:
        import httpx

        async def body() -> Any:
            with issued.clip.path.open("rb") as f:
                while chunk := f.read(1 << 16):
                    yield chunk

        try:
            async with httpx.AsyncClient(timeout=PUT_TIMEOUT_S) as client:
                r = await client.put(a.put_url, content=body(), headers={
                    "Content-Type": "video/mp4", "Content-Length": str(issued.clip.bytes)})
        except httpx.HTTPError as e:
            raise CommandError("upload-failed", f"PUT failed: {type(e).__name__}: {e}") from None
        if r.status_code >= 300:
            raise CommandError("upload-failed", f"PUT answered HTTP {r.status_code}")
        out.update({"uploaded": True, "status": r.status_code})
    return out
