"""Random spot checks (随机抽查): is the staff member who should be at the window really there?

Pure domain code: an injected clock, no I/O. A check names a staff member, a window, or both,
and a deadline. It starts at the window where that staff member is logged in (or the named
window), prompting its console and fingerprint sensor; it ends exactly once:
- `passed`: the finger matched the staff member expected at the window;
- `failed`: another finger, or another person (no match, or someone else's);
- `timeout`: no finger within the deadline (or the sensor could not read one);
- `not_on_duty`: the staff member is not logged in at the window (or anywhere), so there is
  nobody to check; decided at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from edge.clock import Clock
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.domain.queue import Hall
from edge.events import rfc3339

MAX_DEADLINE = timedelta(minutes=30)
KEEP_ENDED = 200  # ended checks kept in memory for lookups; the journal has them all


class SpotState(StrEnum):
    STARTED = "started"
    PASSED = "passed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    NOT_ON_DUTY = "not_on_duty"


@dataclass
class SpotCheck:
    id: str
    window: int | None
    staff: str | None  # who is expected at the window
    sensor: str | None
    deadline: datetime
    started_at: datetime
    state: SpotState = SpotState.STARTED
    identified: str | None = None
    detail: str = ""
    ended_at: datetime | None = None

    def view(self, hall: Hall) -> dict[str, Any]:
        return {"check": self.id, "window": self.window, "staff": self.staff,
                "sensor": self.sensor, "result": self.state.value,
                "identified": self.identified, "detail": self.detail,
                "started_at": rfc3339(hall.local(self.started_at)),
                "deadline": rfc3339(hall.local(self.deadline)),
                "ended_at": rfc3339(hall.local(self.ended_at)) if self.ended_at else None}


class SpotChecks:
    def __init__(self, clock: Clock, sensors: dict[int, str]) -> None:
        self.clock = clock
        self.sensors = sensors  # window -> its fingerprint sensor id
        self.checks: dict[str, SpotCheck] = {}

    def running(self) -> list[SpotCheck]:
        return [c for c in self.checks.values() if c.state == SpotState.STARTED]

    def start(self, hall: Hall, check_id: str, *, window: int | None, staff: str | None,
              deadline: datetime, command_id: str | None = None,
              note: str | None = None) -> tuple[SpotCheck, list[DomainEvent]]:
        """Validate everything first; a refusal changes nothing."""
        now = self.clock.now()
        if window is None and staff is None:
            raise DomainError("invalid", "nothing-to-check", "name a staff member or a window",
                              "window")
        if staff is not None and staff not in hall.staff:
            raise DomainError("not_found", "unknown-staff", f"no staff member {staff!r}",
                              "staff")
        if window is not None and window not in hall.windows:
            raise DomainError("not_found", "unknown-window", f"no window {window}", "window")
        if deadline.tzinfo is None:
            raise DomainError("invalid", "bad-deadline", "the deadline needs a UTC offset",
                              "deadline")
        if deadline <= now:
            raise DomainError("invalid", "deadline-passed",
                              f"the deadline {deadline.isoformat()} is not in the future",
                              "deadline")
        if deadline - now > MAX_DEADLINE:
            raise DomainError("invalid", "deadline-too-far",
                              f"a spot check lasts at most {MAX_DEADLINE}", "deadline")
        if check_id in self.checks:
            raise DomainError("conflict", "check-exists", f"spot check {check_id} exists",
                              "id")
        if window is None:
            window = next((n for n, w in sorted(hall.windows.items()) if w.staff == staff),
                          None)
        if window is not None and window not in self.sensors:
            raise DomainError("conflict", "no-sensor",
                              f"window {window} has no fingerprint sensor to check with",
                              "window")
        if window is not None and any(c.window == window for c in self.running()):
            raise DomainError("conflict", "check-running",
                              f"a spot check is already running at window {window}", "window")
        at_window = hall.windows[window].staff if window is not None else None
        expected = staff if staff is not None else at_window
        c = SpotCheck(check_id, window, expected, self.sensors.get(window) if window else None,
                      deadline, now)
        self.checks[check_id] = c
        started = DomainEvent("spotcheck.started", {k: v for k, v in {
            "check": check_id, "command_id": command_id, "window": window, "staff": expected,
            "sensor": c.sensor, "deadline": rfc3339(hall.local(deadline)), "note": note,
        }.items() if v is not None})
        events = [started]
        if expected is None or at_window != expected:
            why = (f"{expected} is not logged in at any window" if window is None else
                   f"nobody is logged in at window {window}" if at_window is None else
                   f"window {window} is staffed by {at_window}, not {expected}")
            events += self._end(hall, c, SpotState.NOT_ON_DUTY, None, why)
        return c, events

    def _end(self, hall: Hall, c: SpotCheck, state: SpotState, identified: str | None,
             detail: str) -> list[DomainEvent]:
        c.state, c.identified, c.detail = state, identified, detail
        c.ended_at = self.clock.now()
        ended = [k for k, x in self.checks.items() if x.state != SpotState.STARTED]
        for k in ended[:-KEEP_ENDED]:
            del self.checks[k]
        return [DomainEvent("spotcheck.result", c.view(hall))]

    def restore(self, envelopes: list[dict[str, Any]]) -> None:
        """Checks started but not ended before a restart run on (and time out by the sweep)."""
        self.checks.clear()
        for env in envelopes:
            d = env["data"]
            if env["type"] == "spotcheck.started" and "check" in d:
                self.checks[d["check"]] = SpotCheck(
                    d["check"], d.get("window"), d.get("staff"), d.get("sensor"),
                    datetime.fromisoformat(d["deadline"]), datetime.fromisoformat(env["ts"]))
            elif env["type"] == "spotcheck.result":
                self.checks.pop(d["check"], None)

    def identified(self, hall: Hall, check_id: str, staff: str | None,
                   detail: str = "") -> list[DomainEvent]:
        """The window's sensor read a finger: the expected person, someone else, or nobody."""
        c = self.checks[check_id]
        if c.state != SpotState.STARTED:
            return []
        if self.clock.now() > c.deadline:
            return self._end(hall, c, SpotState.TIMEOUT, staff, "the finger came too late")
        if staff is not None and staff == c.staff:
            return self._end(hall, c, SpotState.PASSED, staff, detail or "finger matched")
        return self._end(hall, c, SpotState.FAILED, staff, detail or (
            f"the finger is {staff}'s, not {c.staff}'s" if staff else
            "the finger matched nobody enrolled"))

    def timed_out(self, hall: Hall, check_id: str, detail: str = "") -> list[DomainEvent]:
        c = self.checks[check_id]
        if c.state != SpotState.STARTED:
            return []
        return self._end(hall, c, SpotState.TIMEOUT, None,
                         detail or "no finger within the deadline")

    def sweep(self, hall: Hall) -> list[DomainEvent]:
        """Checks past their deadline end as timeouts (even if the sensor task was lost)."""
        now = self.clock.now()
        out: list[DomainEvent] = []
        for c in self.running():
            if now > c.deadline:
                out += self.timed_out(hall, c.id)
        return out
