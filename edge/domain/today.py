"""Today's figures for the pages: per window, per service, per hour. Plain code, no I/O.

They come from the day's tickets (the hall's memory holds exactly today's) and the day's
rating events, so the staff console and the dashboard need no journal scan per refresh.

Definitions (the supervision statistics module may refine them for the central room):
- wait: issued → first call, for every ticket called today (transferred tickets count their
  own number's wait only);
- service time: start (or call, when start was never pressed) → finish;
- p90: nearest-rank 90th percentile;
- satisfaction rate: 非常满意 + 满意 + 基本满意 over all ratings given (未评价 not counted),
  and the rated share: ratings given over ratings requested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.domain.model import Ticket, TicketState

GOOD_LEVELS = ("very_satisfied", "satisfied", "basically_satisfied")
SERVED = (TicketState.FINISHED,)


def _ms(a: datetime, b: datetime) -> int:
    return max(0, int((b - a).total_seconds() * 1000))


def p90(values: list[int]) -> int | None:
    """Nearest-rank 90th percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def _avg(values: list[int]) -> int | None:
    return round(sum(values) / len(values)) if values else None


def wait_ms(t: Ticket) -> int | None:
    return _ms(t.issued_at, t.called_at) if t.called_at else None


def service_ms(t: Ticket) -> int | None:
    begin = t.started_at or t.called_at
    return _ms(begin, t.finished_at) if begin and t.finished_at else None


def ticket_counts(tickets: Iterable[Ticket]) -> dict[str, Any]:
    ts = list(tickets)
    waits = [w for t in ts if (w := wait_ms(t)) is not None]
    services = [s for t in ts if (s := service_ms(t)) is not None]
    return {
        "tickets": len(ts),
        "called": sum(1 for t in ts if t.called_at is not None),
        "served": sum(1 for t in ts if t.state in SERVED),
        "no_shows": sum(1 for t in ts if t.state == TicketState.NO_SHOW),
        "transferred": sum(1 for t in ts if t.state == TicketState.TRANSFERRED),
        "waiting": sum(1 for t in ts if t.state == TicketState.WAITING),
        "avg_wait_ms": _avg(waits), "p90_wait_ms": p90(waits),
        "avg_service_ms": _avg(services),
    }


def window_counts(tickets: Iterable[Ticket], window: int) -> dict[str, Any]:
    """What one window did today: the tickets it called (wherever they were issued)."""
    return ticket_counts(t for t in tickets if t.window == window)


def rating_counts(rating_events: Iterable[dict[str, Any]],
                  window: int | None = None) -> dict[str, Any]:
    """Ratings of the day from rating.requested / .submitted / .missing events."""
    levels: dict[str, int] = {}
    requested = missing = 0
    for env in rating_events:
        d = env["data"]
        if window is not None and d.get("window") != window:
            continue
        if env["type"] == "rating.requested":
            requested += 1
        elif env["type"] == "rating.submitted":
            levels[d["level"]] = levels.get(d["level"], 0) + 1
        elif env["type"] == "rating.missing":
            missing += 1
    rated = sum(levels.values())
    good = sum(levels.get(lv, 0) for lv in GOOD_LEVELS)
    return {"requested": requested, "rated": rated, "unrated": missing, "levels": levels,
            "satisfaction_rate": round(good / rated, 4) if rated else None,
            "rated_share": round(rated / requested, 4) if requested else None}


def by_hour(tickets: Iterable[Ticket], tz: ZoneInfo) -> list[dict[str, Any]]:
    """Per local hour of issue: tickets issued and their average wait (called ones)."""
    hours: dict[int, list[Ticket]] = {}
    for t in tickets:
        hours.setdefault(t.issued_at.astimezone(tz).hour, []).append(t)
    out = []
    for h in sorted(hours):
        waits = [w for t in hours[h] if (w := wait_ms(t)) is not None]
        out.append({"hour": h, "tickets": len(hours[h]), "avg_wait_ms": _avg(waits)})
    return out


def by_service(tickets: Iterable[Ticket], names: dict[str, str]) -> list[dict[str, Any]]:
    per: dict[str, list[Ticket]] = {code: [] for code in names}
    for t in tickets:
        per.setdefault(t.service, []).append(t)
    return [{"service": code, "name": names.get(code, code), **ticket_counts(ts)}
            for code, ts in per.items()]


def idle_since(tickets: Iterable[Ticket], window: int,
               logged_in_at: datetime | None) -> datetime | None:
    """When a staffed window last became free: its last ticket's end, else the login."""
    ends = [e for t in tickets if t.window == window
            for e in (t.finished_at, t.no_show_at) if e is not None]
    last = max(ends, default=None)
    if logged_in_at and (last is None or logged_in_at > last):
        return logged_in_at
    return last
