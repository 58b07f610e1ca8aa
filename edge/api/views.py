"""How tickets and windows look in API answers (shared by the routers)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from edge.domain.model import Ticket
from edge.domain.queue import Hall


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def json_answer(doc: dict[str, Any], status: int = 200) -> Response:
    """An answer serialised once, as it is: for routes whose answer is already plain JSON
    (returning the dict would have FastAPI validate it against `Any` and re-encode it)."""
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def ticket_view(hall: Hall, t: Ticket, ahead: int | None = None) -> dict[str, Any]:
    """`ahead`: the ticket's place in its queue when the caller already knows it (a list in
    queue order), saving a pass over the queue per ticket."""
    if ahead is None:
        ahead = hall.ahead(t)
    return {
        "id": t.id, "number": t.number, "service": t.service,
        "service_name": hall.services[t.service].name, "priority": t.priority.value,
        "source": t.source.value, "state": t.state.value,
        "issued_at": hall.local(t.issued_at).isoformat(timespec="seconds"),
        "window": t.window, "ahead": ahead,
        "est_wait_ms": hall.estimate_wait_ms(t.service, ahead), "recalls": t.recalls,
        "appointment": t.appointment, "transferred_from": t.transferred_from,
        "transferred_to": t.transferred_to,
    }


def window_view(hall: Hall, n: int) -> dict[str, Any]:
    w = hall.windows[n]
    cur = hall.current_ticket(n)
    nxt, rule = hall.pick_next(n) if w.staff and not w.paused and not cur else (None, "")
    return {
        "window": n, "name": hall.window_cfg[n].name, "staff": w.staff, "paused": w.paused,
        "pause_reason": w.pause_reason, "current": ticket_view(hall, cur) if cur else None,
        "services": [s.service for s in hall.window_cfg[n].services],
        "waiting": sum(hall.waiting_count(s.service) for s in hall.window_cfg[n].services),
        "next": {"number": nxt.number, "rule": rule} if nxt else None,
        "priority_streak": w.priority_streak,
    }
