"""Supervision on the hall floor: attendance records, alerts, spot checks, cross-checks.

The pure rules live in edge/domain/ (attendance, alerts, spotcheck, stats); this service feeds
them from the event bus and the hall state, and journals what they conclude through the runtime:
- every committed event is looked at once (`_on_event`): punches mark who clocked in today, a
  call by someone who did not is an `anomaly.detected`, and so is a window whose ratings are
  refused unusually often; a bad rating raises an alert; a pause starts a pause clock;
- every `evaluate_seconds` (`tick`): the floor conditions are measured (alerts raised, escalated,
  cleared), overdue spot checks end, and each working day that is over is judged per staff
  member and journalled as `attendance.recorded` (again whenever a later punch or leave changes
  it), so the central room gets the records, not only the punches.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import uuid
from collections import Counter
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from edge.domain import stats as stats_mod
from edge.domain.alerts import AlertBoard, AlertKind, AlertLevel, Observation
from edge.domain.attendance import (
    LEAVE_KINDS,
    STATUS_NAMES,
    SUMMARY_COLUMNS,
    AttendanceRules,
    Leave,
    MonthSummary,
    Punch,
    leave_from_event,
    month_range,
    punch_from_event,
)
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.domain.spotcheck import SpotChecks, SpotState
from edge.sensors import SensorFailure

if TYPE_CHECKING:
    from edge.assembly import HallServices
    from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
PUNCH_TYPES = ("punch.recorded", "fingerprint.identified")
OWN_TYPES = frozenset({"alert.raised", "alert.cleared", "anomaly.detected",
                       "attendance.recorded", "spotcheck.started", "spotcheck.result",
                       "leave.recorded"})
BAD = {"dissatisfied": AlertLevel.YELLOW, "very_dissatisfied": AlertLevel.RED}
LOOKBACK_DAYS = 62  # how far back records are (re)judged after a restart


class Supervision:
    def __init__(self, rt: HallRuntime, services: HallServices) -> None:
        self.rt = rt
        self.services = services  # the window sensors, by id
        self._snapshot_tasks: set[asyncio.Future[Any]] = set()
        cfg = rt.config
        self.rules = AttendanceRules(cfg.attendance, cfg.hall, cfg.staff)
        self.acfg = cfg.alerts
        hall = rt.hall
        self.board = AlertBoard(rt.clock, hall.tz, timedelta(minutes=self.acfg.escalate_minutes))
        sensors = {f.window: f.id for f in (cfg.devices.fingerprints if cfg.devices else [])
                   if f.window is not None}
        self.spot = SpotChecks(rt.clock, sensors)
        self.paused_since: dict[int, datetime] = {}
        self.left_at: dict[int, datetime] = {}  # when the window's last staff member left
        self.clocked_in: dict[date, set[str]] = {}
        self.flagged: set[tuple[Any, ...]] = set()
        self.refused: Counter[tuple[date, int]] = Counter()
        self.accepted: Counter[tuple[date, int]] = Counter()
        self.leaves: list[Leave] = []
        self.recorded: dict[tuple[str, date], dict[str, Any]] = {}
        self.judged_upto: date | None = None  # every staff member's days up to it are judged
        self.recheck: set[date] = set()
        self._last_day: tuple[tuple[str, str] | None, date] = (None, date.min)  # _day_of's
        self._restore()
        rt.reload_listeners.append(self._restore)  # a failed commit: back to what is on disk
        rt.bus.subscribe("supervision", self._on_event)

    # ---- restore ---------------------------------------------------------------------------
    def _journal(self, types: tuple[str, ...] | list[str], since: str | None = None
                 ) -> list[dict[str, Any]]:
        return self.rt.store.journal_of_types(types, since)

    def _restore(self) -> None:
        """Everything this service knows, rebuilt from the journal (at start, and after a
        failed commit, so memory never runs ahead of what is on disk)."""
        self.paused_since.clear()
        self.left_at.clear()
        self.clocked_in.clear()
        self.flagged.clear()
        self.refused.clear()
        self.accepted.clear()
        self.recorded.clear()
        self.recheck.clear()
        self.board.restore(self._journal(("alert.raised", "alert.cleared")))
        self.spot.restore(self._journal(("spotcheck.started", "spotcheck.result"),
                                        (self._today() - timedelta(days=1)).isoformat()))
        self.leaves = [lv for e in self._journal(("leave.recorded",))
                       if (lv := leave_from_event(e)) is not None]
        today = self._today()
        since = (today - timedelta(days=LOOKBACK_DAYS)).isoformat()
        for e in self._journal(("attendance.recorded",), since):
            d = e["data"]
            self.recorded[(d["staff"], date.fromisoformat(d["date"]))] = d
        if self.recorded:
            # The last recorded date again: staff on a later-ending schedule may be unjudged.
            self.judged_upto = max(k[1] for k in self.recorded) - timedelta(days=1)
        else:
            first_ts = self.rt.store.first_event_ts()
            first = self._day_of(first_ts) if first_ts else today
            self.judged_upto = first - timedelta(days=1)
        for e in self._journal(
                (*PUNCH_TYPES, "ticket.called", "rating.rejected", "rating.submitted",
                 "anomaly.detected", "window.paused", "window.resumed", "staff.logged_out",
                 "day.opened"), (today - timedelta(days=1)).isoformat()):
            self._observe(e, replay=True)

    # ---- time ------------------------------------------------------------------------------
    def _today(self) -> date:
        return self.rt.hall.local().date()

    def _day_of(self, ts: str) -> date:
        # Every event passes here; events come in bursts within one minute. The local date
        # cannot change within a minute of one ±HH:MM offset, so the last answer is reused.
        key = (ts[:16], ts[-6:]) if len(ts) > 22 and ts[-6] in "+-" and ts[-3] == ":" else None
        if key is not None and key == self._last_day[0]:
            return self._last_day[1]
        day = datetime.fromisoformat(ts).astimezone(self.rt.hall.tz).date()
        if key is not None:
            self._last_day = (key, day)
        return day

    # ---- the bus ---------------------------------------------------------------------------
    def _on_event(self, env: dict[str, Any]) -> None:
        if env["type"] in OWN_TYPES:
            return
        events = self._observe(env, replay=False)
        if events:
            self._later(events)

    def _later(self, events: list[DomainEvent]) -> None:
        """After the commit being published, not inside its fan-out (as the rating service)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.call_soon(self._emit, events)
        else:
            self._emit(events)

    def _emit(self, events: list[DomainEvent]) -> None:
        # Durable later; a failed commit reloads this service (reload_listeners).
        self.rt.post(events)

    def _observe(self, env: dict[str, Any], replay: bool) -> list[DomainEvent]:
        t, d = env["type"], env["data"]
        day = self._day_of(env["ts"])
        out: list[DomainEvent] = []
        if t in PUNCH_TYPES:
            p = punch_from_event(env)
            if p is not None:
                pday = self.rules.local_date(p.at)
                self.clocked_in.setdefault(pday, set()).add(p.staff)
                if self.judged_upto is not None and pday <= self.judged_upto:
                    self.recheck.add(pday)  # a punch read back late changes a judged day
        elif t == "anomaly.detected":
            self.flagged.add((day, d["kind"], d.get("staff"), d.get("window")))
        elif t == "ticket.called":
            staff, window = d.get("staff"), d["window"]
            key = (day, "called_without_clock_in", staff, window)
            if staff and staff not in self.clocked_in.get(day, set()) \
                    and key not in self.flagged:
                self.flagged.add(key)
                if not replay:
                    out.append(DomainEvent("anomaly.detected", {
                        "kind": "called_without_clock_in", "window": window, "staff": staff,
                        "ticket": d["ticket"], "number": d["number"], "date": day.isoformat(),
                        "detail": f"{d['number']} was called at window {window} by {staff}, "
                                  f"who has no clock-in on {day.isoformat()}"}))
        elif t in ("rating.rejected", "rating.submitted"):
            window = d["window"]
            (self.refused if t == "rating.rejected" else self.accepted)[(day, window)] += 1
            out += self._refusals(day, window, replay)
            if t == "rating.submitted" and d["level"] in BAD and self.acfg.bad_ratings \
                    and not replay:
                reason = d.get("reason")
                out += self.board.occurred(
                    AlertKind.BAD_RATING, f"ticket:{d['ticket']}", BAD[d["level"]],
                    f"{d['level_name']} at window {window} for {d['number']}"
                    + (f": {reason}" if reason else " (no reason given)"),
                    {"window": window, "staff": d["staff"], "ticket": d["ticket"],
                     "number": d["number"], "service": d["service"], "rating": d["level"],
                     "reason": reason})
        elif t == "window.paused":
            self.paused_since[d["window"]] = datetime.fromisoformat(env["ts"])
        elif t in ("window.resumed", "staff.logged_out"):
            self.paused_since.pop(d["window"], None)
            if t == "staff.logged_out":
                self.left_at[d["window"]] = datetime.fromisoformat(env["ts"])
        elif t == "day.opened":
            self.paused_since.clear()
            self.left_at.clear()
        return out

    def _refusals(self, day: date, window: int, replay: bool) -> list[DomainEvent]:
        rule = self.acfg.refused_ratings
        n, ok = self.refused[(day, window)], self.accepted[(day, window)]
        key = (day, "ratings_refused_often", None, window)
        if n < rule.min_count or n * 100 < rule.percent * (n + ok) or key in self.flagged \
                or replay:
            return []
        self.flagged.add(key)
        return [DomainEvent("anomaly.detected", {
            "kind": "ratings_refused_often", "window": window,
            "staff": self.rt.hall.windows[window].staff if window in self.rt.hall.windows
            else None, "refused": n, "accepted": ok, "date": day.isoformat(),
            "detail": f"window {window}: {n} of {n + ok} ratings refused today "
                      f"(threshold {rule.min_count} and {rule.percent} %)"})]

    # ---- periodic evaluation ---------------------------------------------------------------
    def observations(self) -> list[Observation]:
        h = self.rt.hall
        now = self.rt.clock.now()
        a = self.acfg
        out: list[Observation] = []
        for code in h.services:
            waiting = h.waiting(code)
            if not waiting:
                continue
            oldest = min(t.queued_at for t in waiting)
            th = a.service_wait_minutes.get(code, a.longest_wait_minutes)
            mins = int((now - oldest).total_seconds() // 60)
            out.append(Observation(AlertKind.LONGEST_WAIT, f"service:{code}", mins, th.yellow,
                                   th.red, f"{code}: the longest wait is {mins} min "
                                   f"({len(waiting)} waiting)", {"service": code}))
        for n, w in sorted(h.windows.items()):
            services = [s.service for s in h.window_cfg[n].services]
            queued = [t.queued_at for s in services for t in h.waiting(s)]
            waiting = len(queued)
            if w.staff is None and waiting and any(h.is_open(s) for s in services):
                # Unattended since people began waiting for it, or since its staff left.
                since = max([min(queued), *([self.left_at[n]] if n in self.left_at else [])])
                mins = int((now - since).total_seconds() // 60)
                out.append(Observation(
                    AlertKind.UNATTENDED, f"window:{n}", mins, a.unattended_minutes.yellow,
                    a.unattended_minutes.red,
                    f"window {n}: {waiting} waiting for its services, nobody logged in for "
                    f"{mins} min", {"window": n}))
            if w.paused and n in self.paused_since:
                mins = int((now - self.paused_since[n]).total_seconds() // 60)
                out.append(Observation(
                    AlertKind.PAUSED, f"window:{n}", mins, a.paused_minutes.yellow,
                    a.paused_minutes.red,
                    f"window {n} paused for {mins} min ({w.pause_reason})",
                    {"window": n, "staff": w.staff}))
        if a.device_faults:
            for dev, hs in sorted(self.rt.health.current.items()):
                if hs.grade in ("A", "B") and not (hs.device_class == "link"
                                                  and hs.grade == "A"):
                    out.append(Observation(
                        AlertKind.DEVICE_FAULT, f"device:{dev}", 2 if hs.grade == "A" else 1,
                        1, 2, f"{dev} ({hs.device_class}) grade {hs.grade}: {hs.detail}",
                        {"device": dev}))
        link = self.rt.health.current.get("mqtt-link")
        if link is not None and link.metrics and link.metrics.get("quota_bytes"):
            pct = link.metrics.get("unsent_bytes", 0) * 100 // link.metrics["quota_bytes"]
            out.append(Observation(AlertKind.OUTBOX, "outbox", pct, a.outbox_percent.yellow,
                                   a.outbox_percent.red,
                                   f"the outbox holds {pct} % of its quota unsent",
                                   {"device": "mqtt-link"}))
        return out

    def evaluate(self) -> list[DomainEvent]:
        events = self.board.evaluate(self.observations())
        events += self.board.escalate_unacknowledged()
        events += self.spot.sweep(self.rt.hall)
        events += self.judge_days()
        return events

    def tick(self) -> list[dict[str, Any]]:
        """Evaluate and journal; the sealed events when committed synchronously (no loop)."""
        events = self.evaluate()
        if not events:
            return []
        return self.rt.post(events).sealed or []

    # ---- attendance ------------------------------------------------------------------------
    def punches(self, since: date) -> list[Punch]:
        # A punch is never journalled before it happened: rows from `since` cover it.
        return [p for e in self._journal(PUNCH_TYPES, since.isoformat())
                if (p := punch_from_event(e)) is not None]

    def judge_days(self) -> list[DomainEvent]:
        """Records for every working day that is over and not yet journalled as it is now."""
        now = self.rt.clock.now()
        today = self._today()
        start = max((self.judged_upto or today) + timedelta(days=1),
                    today - timedelta(days=LOOKBACK_DAYS))
        days = sorted({*self.recheck, *(start + timedelta(days=i)
                                        for i in range((today - start).days + 1))})
        self.recheck.clear()
        if not days:
            return []
        punches = self.punches(days[0])
        events = []
        upto = self.judged_upto or today - timedelta(days=LOOKBACK_DAYS + 1)
        for d in days:
            closed = True
            for staff in sorted(self.rules.staff):
                if not self.rules.is_workday(staff, d):
                    continue
                if now < self.rules.day_end(staff, d):
                    closed = False
                    continue
                data = self.rules.day_record(staff, d, punches, self.leaves, now).to_data()
                if self.recorded.get((staff, d)) != data:
                    self.recorded[(staff, d)] = data
                    events.append(DomainEvent("attendance.recorded", data))
            if closed and d == upto + timedelta(days=1):
                upto = d
        self.judged_upto = upto
        return events

    async def record_leave(self, staff: str, start: date, end: date, kind: str,
                           note: str | None, by: str) -> dict[str, Any]:
        if staff not in self.rules.staff:
            raise DomainError("not_found", "unknown-staff", f"no staff member {staff!r}",
                              "staff")
        if end < start:
            raise DomainError("invalid", "bad-range", f"to ({end}) is before from ({start})",
                              "to")
        if (end - start).days >= 366:
            raise DomainError("invalid", "range-too-long", "a leave lasts at most a year",
                              "to")
        if kind not in LEAVE_KINDS:
            raise DomainError("invalid", "unknown-leave-kind",
                              f"kind must be one of {', '.join(LEAVE_KINDS)}", "kind")
        leave_id = f"L-{uuid.uuid4().hex[:12]}"
        env = await self.rt.record([DomainEvent("leave.recorded", {
            "leave": leave_id, "staff": staff, "from": start.isoformat(), "to": end.isoformat(),
            "kind": kind, "note": note, "by": by})])
        self.leaves.append(Leave(leave_id, staff, start, end, kind))
        d = start
        while d <= min(end, self._today()):
            if self.judged_upto is not None and d <= self.judged_upto:
                self.recheck.add(d)
            d += timedelta(days=1)
        return env[0]["data"] | {"seq": env[0]["seq"]}

    def check_month(self, month: str, subject: str = "month") -> tuple[date, date]:
        first, last = month_range(month, subject)
        if first > self._today():
            raise DomainError("invalid", "month-in-future", f"{month} has not begun", subject)
        if first.year < 2000:
            raise DomainError("invalid", "bad-month", f"no records for {month}", subject)
        return first, last

    def month_summary(self, month: str, subject: str = "month") -> MonthSummary:
        first, _ = self.check_month(month, subject)
        first_ts = self.rt.store.first_event_ts()
        since = self._day_of(first_ts) if first_ts else self._today()
        return self.rules.month_summary(month, self.punches(first), self.leaves,
                                        self.rt.clock.now(), since)

    # ---- statistics ------------------------------------------------------------------------
    def stats(self, start: date, end: date, by: str) -> dict[str, Any]:
        stats_mod.check_range(start, end, by)
        lo, hi = stats_mod.day_bounds(start, end, self.rt.hall.tz)
        envs = self.rt.store.journal_of_types(
            [t for t in stats_mod.TYPES if t != "attendance.recorded"], lo, hi,
            always=["attendance.recorded"])
        return stats_mod.compute(envs, tz=self.rt.hall.tz, start=start, end=end, by=by)

    # ---- spot checks -----------------------------------------------------------------------
    async def spot_check(self, *, window: int | None, staff: str | None, deadline: datetime,
                         command_id: str | None = None, note: str | None = None
                         ) -> dict[str, Any]:
        """Start a check, prompt the window's sensor until the deadline, return the result."""
        hall = self.rt.hall
        check_id = f"SC-{uuid.uuid4().hex[:12]}"
        c, events = self.spot.start(hall, check_id, window=window, staff=staff,
                                    deadline=deadline, command_id=command_id, note=note)
        events, snapshot = self._with_snapshot(events, c.window, c.id)
        sealed = await self.rt.record(events)
        started_seq = sealed[0]["seq"]
        if c.state != SpotState.STARTED:
            return c.view(hall) | {"seq": started_seq, "snapshot": snapshot}
        result: list[DomainEvent] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + (c.deadline - self.rt.clock.now()).total_seconds()
        driver = self.services.sensors.get(c.sensor or "")
        try:
            while not result:
                left = end - loop.time()
                if left <= 0:
                    result = self.spot.timed_out(hall, c.id)
                    break
                if driver is None:
                    await asyncio.sleep(min(left, 0.2))
                    driver = self.services.sensors.get(c.sensor or "")
                    continue
                try:
                    who = await asyncio.wait_for(driver.identify("spot_check"), left)
                except SensorFailure as e:
                    if e.code == "finger-timeout":
                        continue  # nobody yet: prompt again until the deadline
                    if e.code in ("sensor-offline", "sensor-timeout"):
                        await asyncio.sleep(min(max(0.0, end - loop.time()), 0.2))
                        continue
                    result = self.spot.identified(hall, c.id, None, f"sensor: {e.detail}")
                    break
                result = self.spot.identified(hall, c.id, who.get("staff"))
        except TimeoutError:
            result = self.spot.timed_out(hall, c.id)
        result = result or self.spot.timed_out(hall, c.id)
        result, snapshot = self._with_snapshot(result, c.window, c.id)
        await self.rt.record(result)
        return c.view(hall) | {"seq": started_seq, "snapshot": snapshot}

    def _with_snapshot(self, events: list[DomainEvent], window: int | None,
                       check_id: str) -> tuple[list[DomainEvent], str | None]:
        """A spot check's result names a snapshot from the window's camera (taken now, in the
        background), so the room sees who was at the window when the check ended."""
        video = self.services.video
        if video is None or window is None or not any(
                e.type == "spotcheck.result" for e in events):
            return events, None
        ref = video.snapshot_ref(window, check_id)
        if not ref:
            return events, None
        task = asyncio.ensure_future(video.take_snapshot(window, ref))
        self._snapshot_tasks = {t for t in self._snapshot_tasks if not t.done()} | {task}
        return [DomainEvent(e.type, {**e.data, "snapshot": ref})
                if e.type == "spotcheck.result" else e for e in events], ref

    # ---- reports ---------------------------------------------------------------------------
    def open_alerts(self) -> list[dict[str, Any]]:
        return self.board.views()

    async def acknowledge(self, alert_id: str, by: str) -> dict[str, Any]:
        events = self.board.acknowledge(alert_id, by)
        env = await self.rt.record(events)
        return env[0]["data"]


def summary_csv(s: MonthSummary) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["范围", *(h for _, h in SUMMARY_COLUMNS)])
    for r in s.staff:
        w.writerow(["人员", *[_cell(getattr(r, k)) if k != "people" else ""
                              for k, _ in SUMMARY_COLUMNS]])
    for r in s.departments:
        w.writerow(["部门", *[_cell(getattr(r, k)) if k not in ("staff", "name") else ""
                              for k, _ in SUMMARY_COLUMNS]])
    return buf.getvalue()


def _cell(v: Any) -> Any:
    return "" if v is None else v


def summary_xlsx(s: MonthSummary, hall_name: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "人员汇总"
    sheets = [(ws, False, s.staff), (wb.create_sheet("部门汇总"), True, s.departments)]
    for sheet, dept, rows in sheets:
        sheet.append([f"{hall_name} {s.month} 考勤月汇总"])
        sheet["A1"].font = Font(bold=True)
        sheet.append(MonthSummary.headers(dept))
        for r in rows:
            sheet.append(MonthSummary.row_values(r, dept))
    detail = wb.create_sheet("每日明细")
    detail.append(["工号", "日期", "班次", "状态", "迟到分钟", "早退分钟", "缺卡次数",
                   "打卡次数", "请假", "打卡时间"])
    for rec in s.records:
        if not rec.workday:
            continue
        d = rec.to_data()
        detail.append([rec.staff, rec.date.isoformat(), rec.schedule,
                       "、".join(STATUS_NAMES[x] for x in rec.statuses), d["late_minutes"],
                       d["early_minutes"], d["missing_punches"], d["punches"], rec.leave or "",
                       " ".join(f"{p.start}-{p.end}:{p.clock_in or '—'}/{p.clock_out or '—'}"
                                for p in rec.periods)])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()




class SupervisionLoop:
    """Runs the evaluation every `[alerts] evaluate_seconds`."""

    name = "supervision"

    def __init__(self, svc: Supervision, interval: float) -> None:
        self.svc = svc
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="supervision")

    def alive(self) -> bool:
        """For the assembly's supervisor: the evaluation task still runs."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                self.svc.tick()
            except Exception:
                log.exception("supervision evaluation failed; retrying")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def install(rt: HallRuntime, services: HallServices) -> Supervision:
    """What the assembly adds for this feature: the service (in `services.supervision`) and
    its central commands (in `services.commands`); the caller runs `SupervisionLoop`."""
    from edge.link.commands import add_command
    from edge.supervision_commands import COMMANDS

    services.supervision = Supervision(rt, services)
    for name, handler in COMMANDS:
        add_command(services.commands, name, handler)
    return services.supervision
