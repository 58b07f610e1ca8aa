"""The central room's supervision commands: spotcheck.start, attendance.summary, stats.get.

Added to the assembly's command table by `edge.supervision.install`; each validates its args
first and refuses with the failing field named, changing nothing. The month and statistics
reads run off the loop.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

from pydantic import AwareDatetime, Field

from edge.domain.errors import DomainError
from edge.link.commands import Args, CommandContext, CommandError, _args
from edge.supervision import Supervision


def _svc(ctx: CommandContext) -> Supervision:
    svc = getattr(ctx.services, "supervision", None)
    if svc is None:
        raise CommandError("unavailable", "supervision is not running on this box")
    return svc

DEFAULT_SPOTCHECK_S = 120


class SpotcheckArgs(Args):
    window: int | None = Field(default=None, ge=1, le=9999)
    staff: str | None = Field(default=None, min_length=1, max_length=32)
    note: str | None = Field(default=None, max_length=200)
    # When the staff member must have verified by; default two minutes from now.
    deadline: AwareDatetime | None = None


def _refuse(e: DomainError) -> CommandError:
    # The refusal's subject (to, staff) names the same field as the command's args.
    where = e.subject or ""
    return CommandError("bad-args" if e.kind in ("invalid", "not_found") else e.code,
                        f"{where}: {e.detail}" if where else e.detail)


async def cmd_spotcheck_start(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """A real check: prompts the window's sensor; the reply is the result (after the deadline
    at the latest), and so is the `spotcheck.result` event."""
    a = _args(SpotcheckArgs, args)
    svc = _svc(ctx)
    deadline = a.deadline or (ctx.rt.clock.now() + timedelta(seconds=DEFAULT_SPOTCHECK_S))
    try:
        return await svc.spot_check(window=a.window, staff=a.staff, deadline=deadline,
                                    command_id=ctx.command_id, note=a.note)
    except DomainError as e:
        raise _refuse(e) from None


class SummaryArgs(Args):
    month: str = Field(pattern=r"^\d{4}-\d{2}$")


async def cmd_attendance_summary(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """The monthly attendance summary (月汇总) per staff member and per home department."""
    a = _args(SummaryArgs, args)
    try:
        s = await asyncio.to_thread(_svc(ctx).month_summary, a.month, "/month")
        return s.to_data()
    except DomainError as e:
        raise _refuse(e) from None


class StatsArgs(Args):
    from_: date = Field(alias="from")
    to: date
    by: str = "window"


async def cmd_stats_get(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """The same figures as GET /api/v1/stats, from the same journal events."""
    a = _args(StatsArgs, args)
    try:
        return await asyncio.to_thread(_svc(ctx).stats, a.from_, a.to, a.by)
    except DomainError as e:
        raise _refuse(e) from None


COMMANDS = (("spotcheck.start", cmd_spotcheck_start),
            ("attendance.summary", cmd_attendance_summary), ("stats.get", cmd_stats_get))

