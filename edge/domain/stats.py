"""Hall statistics from journal events only: the one module the box and the central side share.

`compute(envelopes, ...)` reads nothing but the events it is given (their `type`, `ts` and
`data`), so the central room, recomputing from what it ingested, gets exactly the box's figures.
Every figure is an integer or a percentage rounded to two decimals from integers; the formulas
are written out in docs/statistics.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from edge.domain.errors import DomainError

DIMENSIONS = ("window", "staff", "service", "day", "month")
LEVELS = ("very_satisfied", "satisfied", "basically_satisfied", "dissatisfied",
          "very_dissatisfied")
SATISFIED = LEVELS[:3]
MAX_DAYS = 366
# The event types the figures are made of (the central side selects these).
TYPES = ("ticket.issued", "ticket.called", "ticket.no_show", "ticket.reactivated",
         "ticket.finished", "ticket.transferred", "ticket.cancelled", "rating.submitted",
         "rating.missing", "attendance.recorded", "anomaly.detected")


def check_range(start: date, end: date, by: str) -> None:
    if by not in DIMENSIONS:
        raise DomainError("invalid", "bad-dimension",
                          f"by must be one of {', '.join(DIMENSIONS)}, got {by!r}", "by")
    if end < start:
        raise DomainError("invalid", "bad-range", f"to ({end}) is before from ({start})",
                          "to")
    if (end - start).days + 1 > MAX_DAYS:
        raise DomainError("invalid", "range-too-long",
                          f"at most {MAX_DAYS} days (a year) at a time, got "
                          f"{(end - start).days + 1}", "to")


def parse_date(value: str, subject: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise DomainError("invalid", "bad-date", f"expected YYYY-MM-DD, got {value!r}",
                          subject) from None


def mean(xs: list[int]) -> int | None:
    """Integer mean, halves rounded up; None for no samples."""
    if not xs:
        return None
    return (2 * sum(xs) + len(xs)) // (2 * len(xs))


def p90(xs: list[int]) -> int | None:
    """Nearest-rank 90th percentile: the ceil(0.9 n)-th smallest sample."""
    if not xs:
        return None
    s = sorted(xs)
    return s[-(-9 * len(s) // 10) - 1]


def pct(num: int, den: int) -> float | None:
    return round(100 * num / den, 2) if den else None


@dataclass
class Group:
    key: str
    tickets: int = 0
    served: int = 0
    no_shows: int = 0
    transferred: int = 0
    waits: list[int] = field(default_factory=list)
    service_times: list[int] = field(default_factory=list)
    ratings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    unrated: int = 0
    workdays: int = 0
    leave_days: int = 0
    present_days: int = 0
    anomalies: int = 0

    def row(self) -> dict[str, Any]:
        rated = sum(self.ratings.values())
        sat = sum(self.ratings[lv] for lv in SATISFIED)
        return {
            "key": self.key, "tickets": self.tickets, "served": self.served,
            "no_shows": self.no_shows, "transferred": self.transferred,
            "avg_wait_ms": mean(self.waits), "p90_wait_ms": p90(self.waits),
            "avg_service_ms": mean(self.service_times),
            "ratings": dict(self.ratings), "rated": rated, "unrated": self.unrated,
            "rated_share": pct(rated, rated + self.unrated),
            "satisfaction_rate": pct(sat, rated),
            "attendance_rate": pct(self.present_days, self.workdays - self.leave_days),
            "anomalies": self.anomalies,
        }


@dataclass
class _Ticket:
    service: str
    day: date
    first_call: tuple[int, str | None, int] | None = None  # window, staff, wait_ms
    no_show_at: tuple[int, str | None] | None = None  # last unreversed no-show
    finished: tuple[int, str | None, int] | None = None  # window, staff, service_ms
    transferred: tuple[int, str | None] | None = None


def compute(envelopes: Iterable[dict[str, Any]], *, tz: str | ZoneInfo, start: date,
            end: date, by: str) -> dict[str, Any]:
    """Figures for hall-local dates start..end (inclusive), grouped by `by`."""
    check_range(start, end, by)
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    tickets: dict[str, _Ticket] = {}
    ratings: list[tuple[date, dict[str, Any], str | None]] = []  # day, data, level or None
    attendance: dict[tuple[str, str], dict[str, Any]] = {}
    anomalies: list[tuple[date, dict[str, Any]]] = []

    def local_day(env: dict[str, Any]) -> date:
        return datetime.fromisoformat(env["ts"]).astimezone(zone).date()

    for env in sorted(envelopes, key=lambda e: int(e["seq"])):
        typ, d = env["type"], env["data"]
        if typ == "attendance.recorded":
            day = date.fromisoformat(d["date"])
            if start <= day <= end:
                attendance[(d["staff"], d["date"])] = d  # a later record corrects an earlier
            continue
        day = local_day(env)
        if not start <= day <= end:
            continue
        if typ == "ticket.issued":
            tickets[d["ticket"]] = _Ticket(d["service"], date.fromisoformat(d["day"]))
            continue
        if typ in ("rating.submitted", "rating.missing"):
            ratings.append((day, d, d["level"] if typ == "rating.submitted" else None))
            continue
        if typ == "anomaly.detected":
            anomalies.append((day, d))
            continue
        t = tickets.get(d.get("ticket", ""))
        if t is None:
            continue  # issued before the range: counted with its own day
        if typ == "ticket.called" and t.first_call is None:
            t.first_call = (d["window"], d.get("staff"), int(d["wait_ms"]))
        elif typ == "ticket.no_show":
            t.no_show_at = (d["window"], d.get("staff"))
        elif typ == "ticket.reactivated":
            t.no_show_at = None
        elif typ == "ticket.finished":
            t.finished = (d["window"], d.get("staff"), int(d["service_ms"]))
        elif typ == "ticket.transferred":
            t.transferred = (d["window"], d.get("staff"))

    groups: dict[str, Group] = {}

    def g(key: Any) -> Group:
        k = str(key)
        if k not in groups:
            groups[k] = Group(k)
        return groups[k]

    def period_key(day: date) -> str:
        return day.isoformat() if by == "day" else day.strftime("%Y-%m")

    for t in tickets.values():
        if by in ("service", "day", "month"):
            grp = g(t.service if by == "service" else period_key(t.day))
            grp.tickets += 1
            if t.first_call is not None:
                grp.waits.append(t.first_call[2])
            if t.finished is not None:
                grp.served += 1
                grp.service_times.append(t.finished[2])
            if t.no_show_at is not None:
                grp.no_shows += 1
            if t.transferred is not None:
                grp.transferred += 1
            continue
        idx = 0 if by == "window" else 1
        # window / staff: a ticket counts where it was first called; outcomes where they were.
        if t.first_call is not None and t.first_call[idx] is not None:
            grp = g(t.first_call[idx])
            grp.tickets += 1
            grp.waits.append(t.first_call[2])
        if t.finished is not None and t.finished[idx] is not None:
            grp = g(t.finished[idx])
            grp.served += 1
            grp.service_times.append(t.finished[2])
        if t.no_show_at is not None and t.no_show_at[idx] is not None:
            g(t.no_show_at[idx]).no_shows += 1
        if t.transferred is not None and t.transferred[idx] is not None:
            g(t.transferred[idx]).transferred += 1

    for day, d, level in ratings:
        key = {"window": d.get("window"), "staff": d.get("staff"),
               "service": d.get("service")}.get(by, period_key(day))
        if key is None:
            continue
        grp = g(key)
        if level is None:
            grp.unrated += 1
        elif level in grp.ratings:
            grp.ratings[level] += 1

    if by in ("staff", "day", "month"):
        for (staff, dstr), rec in attendance.items():
            if not rec["workday"] or "open" in rec["statuses"]:
                continue
            grp = g(staff if by == "staff" else period_key(date.fromisoformat(dstr)))
            grp.workdays += 1
            if "on_leave" in rec["statuses"]:
                grp.leave_days += 1
            elif "absent" not in rec["statuses"]:
                grp.present_days += 1

    for day, d in anomalies:
        key = {"window": d.get("window"), "staff": d.get("staff"),
               "service": None}.get(by, period_key(day))
        if key is not None:
            g(key).anomalies += 1

    def order(k: str) -> tuple[int, str]:
        return (int(k), "") if k.isdigit() and by == "window" else (0, k)

    rows = [groups[k].row() for k in sorted(groups, key=order)]
    if by == "window":
        for r in rows:
            r["key"] = int(r["key"])
    total = _totals(tickets, ratings, attendance)
    return {"from": start.isoformat(), "to": end.isoformat(), "by": by, "rows": rows,
            "total": total.row(),
            "red_flag": red_flag(tickets, ratings, anomalies)}


def _totals(tickets: dict[str, _Ticket], ratings: list[tuple[date, dict[str, Any], str | None]],
            attendance: dict[tuple[str, str], dict[str, Any]]) -> Group:
    tot = Group("total")
    for t in tickets.values():
        tot.tickets += 1
        if t.first_call is not None:
            tot.waits.append(t.first_call[2])
        if t.finished is not None:
            tot.served += 1
            tot.service_times.append(t.finished[2])
        tot.no_shows += t.no_show_at is not None
        tot.transferred += t.transferred is not None
    for _, _, level in ratings:
        if level is None:
            tot.unrated += 1
        elif level in tot.ratings:
            tot.ratings[level] += 1
    for rec in attendance.values():
        if not rec["workday"] or "open" in rec["statuses"]:
            continue
        tot.workdays += 1
        if "on_leave" in rec["statuses"]:
            tot.leave_days += 1
        elif "absent" not in rec["statuses"]:
            tot.present_days += 1
    return tot


def red_flag(tickets: dict[str, _Ticket],
             ratings: list[tuple[date, dict[str, Any], str | None]],
             anomalies: list[tuple[date, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The red-flag window (红旗窗口) ranking: windows that served and were rated, without a
    cross-check anomaly in the range, by satisfaction rate, then fewer bad ratings, then more
    served, then shorter average service time, then window number."""
    by_window: dict[int, Group] = {}
    for t in tickets.values():
        if t.finished is not None:
            grp = by_window.setdefault(t.finished[0], Group(str(t.finished[0])))
            grp.served += 1
            grp.service_times.append(t.finished[2])
    for _, d, level in ratings:
        w = d.get("window")
        if level is not None and w in by_window:
            by_window[w].ratings[level] += 1
    flagged = {d.get("window") for _, d in anomalies}
    ranked = []
    for w, grp in by_window.items():
        rated = sum(grp.ratings.values())
        if rated == 0 or w in flagged:
            continue
        sat = sum(grp.ratings[lv] for lv in SATISFIED)
        bad = rated - sat
        ranked.append((-Fraction(sat, rated), bad, -grp.served, mean(grp.service_times) or 0,
                       w, grp))
    ranked.sort(key=lambda x: x[:5])
    return [{"rank": i + 1, "window": x[4], "satisfaction_rate": x[5].row()["satisfaction_rate"],
             "rated": sum(x[5].ratings.values()), "bad": x[1], "served": x[5].served,
             "avg_service_ms": mean(x[5].service_times)}
            for i, x in enumerate(ranked)]


def day_bounds(start: date, end: date, tz: str | ZoneInfo) -> tuple[str, str]:
    """RFC 3339 bounds with a day of slack either side, to preselect rows by `ts` text."""
    return ((start - timedelta(days=1)).isoformat(), (end + timedelta(days=2)).isoformat())
