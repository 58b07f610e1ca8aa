"""[attendance]: work schedules, grace time, and the calendar of holidays and make-up days.

A schedule is a list of periods ("08:30-12:00") on ISO weekdays. The hall's `default_schedule`
applies to every staff member not listed in `staff` (staff id -> schedule id). The calendar
overrides the weekdays: a `holiday` is a day off even on a weekday, a `workday` is a make-up
working day (调休) even on a weekend. Absent section: one schedule from [hall] hours and days.
"""

from __future__ import annotations

from datetime import date, time
from typing import Literal

from pydantic import Field

from edge.config.base import Spans, Strict, Weekdays, parse_span

_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"


class ScheduleConfig(Strict):
    id: str = Field(pattern=_ID)
    name: str = Field(default="", max_length=32)
    periods: Spans = Field(min_length=1, max_length=6)
    days: Weekdays = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    # Minutes after a period's start a clock-in still counts as on time (and before its end,
    # a clock-out). None: the section's grace_minutes.
    grace_minutes: int | None = Field(default=None, ge=0, le=120)



    def spans(self) -> list[tuple[time, time]]:
        return [parse_span(p) for p in self.periods]


class CalendarDay(Strict):
    date: date
    kind: Literal["holiday", "workday"]  # workday: a make-up working day (调休)
    name: str = Field(default="", max_length=32)


class AttendanceSection(Strict):
    grace_minutes: int = Field(default=5, ge=0, le=120)
    default_schedule: str = "standard"
    schedules: list[ScheduleConfig] = Field(min_length=1)
    staff: dict[str, str] = Field(default_factory=dict,
                                  description="staff id -> schedule id")
    calendar: list[CalendarDay] = Field(default_factory=list)


def cross_check_attendance(sec: AttendanceSection, staff: set[str]) -> list[tuple[str, str]]:
    """(key path, message) pairs: overlapping periods, duplicate ids and days, references."""
    out: list[tuple[str, str]] = []
    ids: dict[str, int] = {}
    for i, s in enumerate(sec.schedules):
        if s.id in ids:
            out.append((f"attendance.schedules[{i}].id",
                        f"schedule id {s.id!r} is already used by schedules[{ids[s.id]}]"))
        ids.setdefault(s.id, i)
        spans = s.spans()
        for j, (a, b) in enumerate(spans):
            for k in range(j):
                c, d = spans[k]
                if a < d and c < b:
                    out.append((f"attendance.schedules[{i}].periods[{j}]",
                                f"period {s.periods[j]!r} overlaps periods[{k}] "
                                f"{s.periods[k]!r}"))
        if len(set(s.days)) != len(s.days):
            out.append((f"attendance.schedules[{i}].days", "a weekday is listed twice"))
    if sec.default_schedule not in ids:
        out.append(("attendance.default_schedule",
                    f"unknown schedule {sec.default_schedule!r}; known: {sorted(ids)}"))
    for who, sched in sec.staff.items():
        if who not in staff:
            out.append((f"attendance.staff.{who}", f"unknown staff id {who!r}"))
        if sched not in ids:
            out.append((f"attendance.staff.{who}", f"unknown schedule {sched!r}"))
    seen: dict[date, int] = {}
    for i, d in enumerate(sec.calendar):
        if d.date in seen:
            out.append((f"attendance.calendar[{i}].date",
                        f"{d.date.isoformat()} is already listed as calendar[{seen[d.date]}]"))
        seen.setdefault(d.date, i)
    return out
