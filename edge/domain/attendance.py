"""Attendance rules (考勤): from raw punches to daily records and a monthly summary (月汇总).

Pure domain code: no I/O; the time of day comes in as an argument, never from a clock read here.
The same punches, leaves and config always give the same records, whatever the order or
duplication of the punches (a terminal read twice, a sensor and a terminal at once).

How punches become a day's record (docs/statistics.md says the same in prose):
- A day is a working day by the staff member's schedule weekdays, unless the calendar lists it
  as a holiday (not working) or as a make-up working day (调休, working).
- Each period of the schedule (08:30-12:00, 13:30-17:30) takes its clock-in from the punches
  between the middle of the gap before it (midnight for the first) and its own middle, and its
  clock-out from the punches between its middle and the middle of the gap after it (midnight for
  the last). The clock-in is the earliest such punch, the clock-out the latest.
- A clock-in later than start + grace is late (迟到) by the whole minutes after the start; a
  clock-out earlier than end - grace is leaving early (早退) by the minutes before the end
  (rounded up); a period without its clock-in or clock-out has a missing punch (缺卡).
- A working day with no punch at all is absent (旷工); one covered by a leave is on leave
  (请假), whatever was punched; one with none of the above flags is on time (正常).
A day is judged only once it is over (`closed`): after the last period's end plus grace.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from edge.config.attendance import AttendanceSection
from edge.config.hall import HallSection
from edge.config.staff import StaffConfig
from edge.domain.errors import DomainError


class DayStatus(StrEnum):
    ON_TIME = "on_time"
    LATE = "late"
    LEFT_EARLY = "left_early"
    MISSING_PUNCH = "missing_punch"
    ABSENT = "absent"
    ON_LEAVE = "on_leave"
    REST = "rest"  # not a working day for this staff member
    OPEN = "open"  # the day is not over yet: not judged


STATUS_NAMES = {
    DayStatus.ON_TIME: "正常", DayStatus.LATE: "迟到", DayStatus.LEFT_EARLY: "早退",
    DayStatus.MISSING_PUNCH: "缺卡", DayStatus.ABSENT: "旷工", DayStatus.ON_LEAVE: "请假",
    DayStatus.REST: "休息", DayStatus.OPEN: "未结束",
}
LEAVE_KINDS = ("事假", "病假", "年假", "婚假", "产假", "丧假", "调休假", "公出", "其他")


@dataclass(frozen=True)
class Period:
    start: time
    end: time


@dataclass(frozen=True)
class WorkSchedule:
    id: str
    periods: tuple[Period, ...]
    days: frozenset[int]
    grace: timedelta


@dataclass(frozen=True, order=True)
class Punch:
    """One proof of presence: a terminal punch or a window sensor's fingerprint match."""

    at: datetime  # aware
    staff: str
    source: str  # "terminal:zk-entrance" | "sensor:fp-w1"


@dataclass(frozen=True)
class Leave:
    id: str
    staff: str
    start: date
    end: date  # inclusive
    kind: str

    def covers(self, d: date) -> bool:
        return self.start <= d <= self.end


@dataclass(frozen=True)
class PeriodRecord:
    start: str  # "08:30"
    end: str
    clock_in: str | None  # "08:31:05"
    clock_out: str | None
    late_minutes: int
    early_minutes: int

    @property
    def late(self) -> bool:
        return self.late_minutes > 0

    @property
    def early(self) -> bool:
        return self.early_minutes > 0

    @property
    def missing(self) -> int:
        return (self.clock_in is None) + (self.clock_out is None)


@dataclass(frozen=True)
class DailyRecord:
    staff: str
    date: date
    schedule: str
    workday: bool
    statuses: tuple[DayStatus, ...]  # in DayStatus order; ON_TIME alone when nothing is wrong
    periods: tuple[PeriodRecord, ...] = ()
    punches: int = 0
    leave: str | None = None  # the leave's kind

    @property
    def counted(self) -> bool:
        """A working day that is over: it counts in a summary."""
        return self.workday and DayStatus.OPEN not in self.statuses

    @property
    def present(self) -> bool:
        return self.counted and not ({DayStatus.ABSENT, DayStatus.ON_LEAVE} & set(self.statuses))

    def to_data(self) -> dict[str, Any]:
        """The `attendance.recorded` event's data."""
        return {
            "staff": self.staff, "date": self.date.isoformat(), "schedule": self.schedule,
            "workday": self.workday, "statuses": [s.value for s in self.statuses],
            "late_minutes": sum(p.late_minutes for p in self.periods),
            "early_minutes": sum(p.early_minutes for p in self.periods),
            "late": sum(p.late for p in self.periods),
            "left_early": sum(p.early for p in self.periods),
            "missing_punches": sum(p.missing for p in self.periods)
            if DayStatus.ABSENT not in self.statuses else 0,
            "punches": self.punches, "leave": self.leave,
            "periods": [{"start": p.start, "end": p.end, "clock_in": p.clock_in,
                         "clock_out": p.clock_out, "late_minutes": p.late_minutes,
                         "early_minutes": p.early_minutes} for p in self.periods],
        }


def _hm(t: time) -> str:
    return t.strftime("%H:%M")


def _secs(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


class AttendanceRules:
    """The hall's schedules and calendar applied to punches and leaves."""

    def __init__(self, section: AttendanceSection | None, hall: HallSection,
                 staff: list[StaffConfig]) -> None:
        self.tz = ZoneInfo(hall.timezone)
        self.staff = {s.id: s for s in staff}
        if section is None:
            sched = WorkSchedule("hall", tuple(Period(*_span(s)) for s in hall.hours),
                                 frozenset(hall.days), timedelta(minutes=5))
            self.schedules = {"hall": sched}
            self.default = "hall"
            self.assigned: dict[str, str] = {}
            self.calendar: dict[date, str] = {}
        else:
            self.schedules = {
                s.id: WorkSchedule(
                    s.id, tuple(sorted((Period(a, b) for a, b in s.spans()),
                                       key=lambda p: p.start)),
                    frozenset(s.days),
                    timedelta(minutes=section.grace_minutes if s.grace_minutes is None
                              else s.grace_minutes))
                for s in section.schedules}
            self.default = section.default_schedule
            self.assigned = dict(section.staff)
            self.calendar = {d.date: d.kind for d in section.calendar}

    # ---- the calendar ----------------------------------------------------------------------
    def schedule_for(self, staff: str) -> WorkSchedule:
        return self.schedules[self.assigned.get(staff, self.default)]

    def is_workday(self, staff: str, d: date) -> bool:
        kind = self.calendar.get(d)
        if kind is not None:
            return kind == "workday"
        return d.isoweekday() in self.schedule_for(staff).days

    def day_end(self, staff: str, d: date) -> datetime:
        """When the day can be judged: the last period's end plus grace."""
        s = self.schedule_for(staff)
        return datetime.combine(d, s.periods[-1].end, self.tz) + s.grace

    def local_date(self, when: datetime) -> date:
        return when.astimezone(self.tz).date()

    # ---- one day ---------------------------------------------------------------------------
    def day_record(self, staff: str, d: date, punches: Iterable[Punch],
                   leaves: Iterable[Leave], now: datetime) -> DailyRecord:
        sched = self.schedule_for(staff)
        mine = sorted({p.at.astimezone(self.tz).time().replace(microsecond=0)
                       for p in punches if p.staff == staff and self.local_date(p.at) == d})
        if not self.is_workday(staff, d):
            return DailyRecord(staff, d, sched.id, False, (DayStatus.REST,), (), len(mine))
        leave = next((lv for lv in sorted(leaves, key=lambda x: (x.start, x.id))
                      if lv.staff == staff and lv.covers(d)), None)
        if leave is not None:
            return DailyRecord(staff, d, sched.id, True, (DayStatus.ON_LEAVE,), (), len(mine),
                               leave.kind)
        if now < self.day_end(staff, d):
            return DailyRecord(staff, d, sched.id, True, (DayStatus.OPEN,), (), len(mine))
        periods = self._periods(sched, mine)
        if not mine:
            return DailyRecord(staff, d, sched.id, True, (DayStatus.ABSENT,), periods, 0)
        flags: list[DayStatus] = []
        if any(p.late for p in periods):
            flags.append(DayStatus.LATE)
        if any(p.early for p in periods):
            flags.append(DayStatus.LEFT_EARLY)
        if any(p.missing for p in periods):
            flags.append(DayStatus.MISSING_PUNCH)
        return DailyRecord(staff, d, sched.id, True, tuple(flags) or (DayStatus.ON_TIME,),
                           periods, len(mine))

    @staticmethod
    def _periods(sched: WorkSchedule, punches: list[time]) -> tuple[PeriodRecord, ...]:
        ps = sched.periods
        secs = [_secs(t) for t in punches]
        grace = int(sched.grace.total_seconds())
        out = []
        for i, p in enumerate(ps):
            s, e = _secs(p.start), _secs(p.end)
            mid = (s + e) // 2
            lo = 0 if i == 0 else (_secs(ps[i - 1].end) + s) // 2
            hi = 24 * 3600 if i == len(ps) - 1 else (e + _secs(ps[i + 1].start)) // 2
            ins = [x for x in secs if lo <= x < mid]
            outs = [x for x in secs if mid <= x < hi]
            cin = min(ins) if ins else None
            cout = max(outs) if outs else None
            late = (cin - s) // 60 if cin is not None and cin > s + grace else 0
            early = math.ceil((e - cout) / 60) if cout is not None and cout < e - grace else 0
            out.append(PeriodRecord(_hm(p.start), _hm(p.end), _clock(cin), _clock(cout),
                                    late, early))
        return tuple(out)

    # ---- ranges ----------------------------------------------------------------------------
    def records(self, start: date, end: date, punches: Iterable[Punch],
                leaves: Iterable[Leave], now: datetime,
                staff: Iterable[str] | None = None) -> list[DailyRecord]:
        """Every staff member's record for every day of start..end, by staff then date."""
        ps = list(punches)
        lv = list(leaves)
        by_staff: dict[str, list[Punch]] = {}
        for p in ps:
            by_staff.setdefault(p.staff, []).append(p)
        out = []
        for who in sorted(staff if staff is not None else self.staff):
            d = start
            while d <= end:
                out.append(self.day_record(who, d, by_staff.get(who, ()), lv, now))
                d += timedelta(days=1)
        return out

    def month_summary(self, month: str, punches: Iterable[Punch], leaves: Iterable[Leave],
                      now: datetime, since: date | None = None) -> MonthSummary:
        """Days before `since` (when the box began recording) are not judged: no data is not
        an absence."""
        first, last = month_range(month)
        recs = self.records(max(first, since or first), last, punches, leaves, now)
        rows: dict[str, SummaryRow] = {
            s: SummaryRow(s, st.name, st.department, people=1) for s, st in self.staff.items()}
        for r in recs:
            rows[r.staff].add(r)
        depts: dict[str, SummaryRow] = {}
        for row in rows.values():
            depts.setdefault(row.department, SummaryRow("", "", row.department)).merge(row)
        return MonthSummary(month, sorted(rows.values(), key=lambda r: r.staff),
                            sorted(depts.values(), key=lambda r: r.department), recs)


def _span(text: str) -> tuple[time, time]:
    from edge.config.base import parse_span

    return parse_span(text)


def _clock(s: int | None) -> str | None:
    if s is None:
        return None
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def month_range(month: str, subject: str = "month") -> tuple[date, date]:
    """'2026-11' -> (2026-11-01, 2026-11-30); anything else is refused."""
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}", month):  # ASCII digits only
            raise ValueError
        first = date(int(month[:4]), int(month[5:]), 1)
    except ValueError:
        raise DomainError("invalid", "bad-month", f"month must be YYYY-MM, got {month!r}",
                          subject) from None
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, nxt - timedelta(days=1)


def rate(num: int, den: int) -> float | None:
    """A percentage with two decimals; None when there is nothing to divide by."""
    return round(100 * num / den, 2) if den else None


@dataclass
class SummaryRow:
    """One staff member's (or one department's) month."""

    staff: str
    name: str
    department: str
    workdays: int = 0  # working days that are over
    present: int = 0  # worked (not absent, not on leave)
    on_time: int = 0
    late: int = 0  # late periods (次)
    late_minutes: int = 0
    left_early: int = 0  # periods left early (次)
    early_minutes: int = 0
    missing_punches: int = 0
    absent: int = 0  # days
    leave: int = 0  # days
    people: int = 0

    def add(self, r: DailyRecord) -> None:
        if not r.counted:
            return
        self.workdays += 1
        data = r.to_data()
        if DayStatus.ON_LEAVE in r.statuses:
            self.leave += 1
            return
        if DayStatus.ABSENT in r.statuses:
            self.absent += 1
            return
        self.present += 1
        self.on_time += DayStatus.ON_TIME in r.statuses
        self.late += data["late"]
        self.late_minutes += data["late_minutes"]
        self.left_early += data["left_early"]
        self.early_minutes += data["early_minutes"]
        self.missing_punches += data["missing_punches"]

    def merge(self, o: SummaryRow) -> None:
        for k in ("workdays", "present", "on_time", "late", "late_minutes", "left_early",
                  "early_minutes", "missing_punches", "absent", "leave", "people"):
            setattr(self, k, getattr(self, k) + getattr(o, k))

    @property
    def attendance_rate(self) -> float | None:
        """Present days over the working days not on leave, in per cent."""
        return rate(self.present, self.workdays - self.leave)


SUMMARY_COLUMNS: list[tuple[str, str]] = [
    ("staff", "工号"), ("name", "姓名"), ("department", "部门"), ("people", "人数"),
    ("workdays", "应出勤天数"), ("present", "实出勤天数"), ("on_time", "正常天数"),
    ("late", "迟到次数"), ("late_minutes", "迟到分钟"), ("left_early", "早退次数"),
    ("early_minutes", "早退分钟"), ("missing_punches", "缺卡次数"), ("absent", "旷工天数"),
    ("leave", "请假天数"), ("attendance_rate", "出勤率(%)"),
]


@dataclass
class MonthSummary:
    month: str
    staff: list[SummaryRow]
    departments: list[SummaryRow]
    records: list[DailyRecord] = field(default_factory=list)

    @staticmethod
    def row_values(r: SummaryRow, dept: bool) -> list[Any]:
        vals = []
        for key, _ in SUMMARY_COLUMNS:
            if dept and key in ("staff", "name"):
                continue
            if not dept and key == "people":
                continue
            vals.append(getattr(r, key))
        return vals

    @staticmethod
    def headers(dept: bool) -> list[str]:
        return [h for k, h in SUMMARY_COLUMNS
                if not (dept and k in ("staff", "name")) and not (not dept and k == "people")]

    def to_data(self) -> dict[str, Any]:
        def row(r: SummaryRow, dept: bool) -> dict[str, Any]:
            keys = [k for k, _ in SUMMARY_COLUMNS
                    if not (dept and k in ("staff", "name")) and not (not dept and k == "people")]
            return {k: getattr(r, k) for k in keys}

        return {"month": self.month, "staff": [row(r, False) for r in self.staff],
                "departments": [row(r, True) for r in self.departments]}


def punch_from_event(env: dict[str, Any]) -> Punch | None:
    """A punch from a journal event: a terminal punch of a known staff member, or a window
    sensor's match. Anything else (an unmapped terminal user, no match) proves nobody."""
    d = env.get("data") or {}
    if env.get("type") == "punch.recorded" and d.get("staff"):
        return Punch(datetime.fromisoformat(d["at"]), d["staff"], f"terminal:{d['terminal']}")
    if env.get("type") == "fingerprint.identified" and d.get("matched") and d.get("staff"):
        return Punch(datetime.fromisoformat(env["ts"]), d["staff"], f"sensor:{d['sensor']}")
    return None


def leave_from_event(env: dict[str, Any]) -> Leave | None:
    if env.get("type") != "leave.recorded":
        return None
    d = env["data"]
    return Leave(d["leave"], d["staff"], date.fromisoformat(d["from"]),
                 date.fromisoformat(d["to"]), d["kind"])
