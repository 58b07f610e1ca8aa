"""The manager's notice on the hall boards (公告): posted and taken down from the dashboard.

Each is a journal event on the one event path, so the LED boards (drivers/board.py), the web
board and the central room all see it: `display.message` with `source: "manager"` (the central
room's own, from its command, carries `source: "central"` and its `command_id`), and
`display.cleared` when the manager takes a notice down before its time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from edge.api.auth import Principal, Roles
from edge.api.deps import ApiContext, Ctx
from edge.api.problems import Refusal
from edge.api.spec import refusals
from edge.domain.model import DomainEvent

Target = Literal["main", "all"] | Annotated[int, Field(ge=1, le=9999)]
Manager = Annotated[Principal, Depends(Roles("manager"))]


class NoticeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=200)
    seconds: int = Field(default=600, ge=5, le=86400)
    # "main": the hall's main boards; "all": every board; a number: that window's board.
    target: Target = "main"


def _check_target(ctx: ApiContext, target: Any, pointer: str) -> None:
    if isinstance(target, int) and target not in {w.number for w in ctx.rt.config.windows}:
        raise Refusal(422, "unknown-window", f"this hall has no window {target}", pointer)


router = APIRouter(prefix="/api/v1/board", tags=["board"])


@router.post("/notice", status_code=201, responses=refusals(422))
async def post_notice(body: NoticeBody, ctx: Ctx, who: Manager) -> dict[str, Any]:
    """Put the manager's notice on the boards for `seconds` (it replaces the notice shown
    there, the central room's too); journalled as `display.message` with `source: manager`."""
    if not body.text.strip():
        raise Refusal(422, "empty-notice", "the notice has no text", "/body/text")
    _check_target(ctx, body.target, "/body/target")
    data = {"text": body.text.strip(), "seconds": body.seconds, "target": body.target,
            "source": "manager", "by": who.name}
    env = await ctx.rt.record([DomainEvent("display.message", data)])
    return {"seq": env[0]["seq"], "notice": data}


@router.delete("/notice", responses=refusals(422))
async def clear_notice(ctx: Ctx, who: Manager,
                       target: Annotated[str, Query(max_length=8, pattern=r"^(main|all|\d{1,4})$")]
                       = "main") -> dict[str, Any]:
    """Take the notice down from the boards of `target` (main, all or a window number) before
    its time: `display.cleared`; the boards go back to what they showed."""
    t: str | int = int(target) if target.isdigit() else target
    _check_target(ctx, t, "/query/target")
    data = {"target": t, "source": "manager", "by": who.name}
    env = await ctx.rt.record([DomainEvent("display.cleared", data)])
    return {"seq": env[0]["seq"], "cleared": data}
