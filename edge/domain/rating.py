"""Satisfaction ratings (服务评价) and the rules that bind a rating to a ticket and a person.

Pure domain code: an injected clock, no I/O. Each operation returns the events that record it;
the caller (edge.ratings) persists them through the runtime.

Levels are the five of GB/T 39734 (非常满意 … 非常不满意). The 4-key evaluator has four keys;
they map to the top four levels (FOUR_KEY below), so 非常不满意 is only reachable from a tablet.

Binding rules. A rating is accepted only when all hold:
  1. the window asked for it (`request`) for a ticket that window finished, while the staff member
     who served it was logged in there;
  2. it is given at that window (an evaluator is bound to one window);
  3. it is the first rating of that ticket;
  4. it arrives within `window_seconds` of the request;
  5. the staff member who served is still logged in at the window.
A submission that breaks a rule changes nothing and becomes a `rating.rejected` event with the
rule's code, so refusals are counted. A request that is not answered in time (or is superseded
by the window's next request, or by the day closing) ends the ticket as 未评价 via
`rating.missing`, and so does a finished ticket that nobody asked to rate in that time; a
missing rating is never turned into a level, least of all 满意.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from edge.clock import Clock
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent, TicketState
from edge.domain.queue import Hall
from edge.events import rfc3339


class Level(StrEnum):
    VERY_SATISFIED = "very_satisfied"
    SATISFIED = "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied"
    DISSATISFIED = "dissatisfied"
    VERY_DISSATISFIED = "very_dissatisfied"


LEVEL_NAMES: dict[Level, str] = {
    Level.VERY_SATISFIED: "非常满意",
    Level.SATISFIED: "满意",
    Level.BASICALLY_SATISFIED: "基本满意",
    Level.DISSATISFIED: "不满意",
    Level.VERY_DISSATISFIED: "非常不满意",
}
LEVEL_SCORES: dict[Level, int] = {
    Level.VERY_SATISFIED: 5, Level.SATISFIED: 4, Level.BASICALLY_SATISFIED: 3,
    Level.DISSATISFIED: 2, Level.VERY_DISSATISFIED: 1,
}
BAD_LEVELS = frozenset({Level.DISSATISFIED, Level.VERY_DISSATISFIED})
# The 4-key evaluator (keys numbered left to right as printed on the device).
FOUR_KEY: dict[int, Level] = {
    1: Level.VERY_SATISFIED, 2: Level.SATISFIED, 3: Level.BASICALLY_SATISFIED,
    4: Level.DISSATISFIED,
}
UNRATED = "未评价"
# Reasons the tablet offers after a bad rating; free text is accepted too.
REASON_CHOICES = ("等候时间长", "服务态度差", "办事效率低", "告知不清楚", "材料要求多", "其他")

# Codes of the binding rules, as they appear in rating.rejected events.
RULES = ("no-request", "wrong-window", "already-rated", "too-late", "staff-not-logged-in",
         "wrong-ticket")


def parse_level(value: str) -> Level:
    """A level by code (satisfied) or by its Chinese name (满意)."""
    for lv, name in LEVEL_NAMES.items():
        if value in (lv.value, name):
            return lv
    raise DomainError("invalid", "unknown-level",
                      f"unknown rating level {value!r}; one of "
                      + ", ".join(f"{lv.value} ({n})" for lv, n in LEVEL_NAMES.items()),
                      "level")


@dataclass(frozen=True)
class RatingRequest:
    ticket: str
    number: str
    service: str
    window: int
    staff: str
    requested_at: datetime
    deadline: datetime


@dataclass(frozen=True)
class Submission:
    window: int
    level: Level
    channel: str  # tablet | keypad
    device: str  # the evaluator's id in the config
    ticket: str | None = None  # the ticket the tablet was shown; keypads do not know it
    reason: str | None = None
    snapshot: str | None = None  # a bad rating: the window camera's snapshot


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    rule: str | None  # the broken rule when refused
    detail: str
    ticket: str | None
    level: Level | None = None


class RatingDesk:
    """Open rating requests per window and the fate of each requested ticket today."""

    def __init__(self, clock: Clock, window_seconds: int, reason_required: bool = True) -> None:
        self.clock = clock
        self.window = timedelta(seconds=window_seconds)
        self.reason_required = reason_required
        self.pending: dict[int, RatingRequest] = {}  # window -> its open request
        self.closed: dict[str, str] = {}  # ticket -> "rated" | "missing:<why>"
        self.last_closed: dict[int, str] = {}  # window -> its last closed ticket
        self.day: str | None = None
        self.rejected: Counter[str] = Counter()

    # ---- helpers -------------------------------------------------------------------------
    def _roll_day(self, hall: Hall) -> list[DomainEvent]:
        """A new business day: what was still open ends 未评价; today's memory starts empty."""
        if self.day == hall.day:
            return []
        events = [self._missing(hall, r, "day_closed") for r in list(self.pending.values())]
        self.pending.clear()
        self.closed.clear()
        self.last_closed.clear()
        self.day = hall.day
        return events

    def _ref(self, r: RatingRequest) -> dict[str, Any]:
        return {"ticket": r.ticket, "number": r.number, "service": r.service,
                "window": r.window, "staff": r.staff}

    def _missing(self, hall: Hall, r: RatingRequest, why: str) -> DomainEvent:
        if r.window in self.pending and self.pending[r.window].ticket == r.ticket:
            del self.pending[r.window]
        self.closed[r.ticket] = f"missing:{why}"
        if why != "not_requested":
            self.last_closed[r.window] = r.ticket
        return DomainEvent("rating.missing", {
            **self._ref(r), "result": UNRATED, "reason": why,
            "requested_at": rfc3339(hall.local(r.requested_at)),
        })

    def _expire(self, hall: Hall) -> list[DomainEvent]:
        now = self.clock.now()
        return [self._missing(hall, r, "timeout") for r in list(self.pending.values())
                if now > r.deadline]

    # ---- operations ----------------------------------------------------------------------
    def sweep(self, hall: Hall) -> list[DomainEvent]:
        """Periodic: requests past their time end 未评价, and so do finished tickets nobody
        asked to rate within the time (so every finished ticket ends rated or 未评价)."""
        events = self._roll_day(hall) + self._expire(hall)
        limit = self.clock.now() - self.window
        asked = {r.ticket for r in self.pending.values()}
        for t in hall.tickets.values():
            if (t.state == TicketState.FINISHED and t.finished_at is not None
                    and t.finished_at < limit and t.id not in self.closed
                    and t.id not in asked and t.window is not None and t.staff is not None):
                events.append(self._missing(hall, RatingRequest(
                    t.id, t.number, t.service, t.window, t.staff, t.finished_at,
                    t.finished_at + self.window), "not_requested"))
        return events

    def request(self, hall: Hall, window: int, ticket: str | None = None,
                staff: str | None = None) -> tuple[RatingRequest, list[DomainEvent]]:
        """The window asks its evaluator to rate a ticket it finished (by default its last)."""
        w = hall._staffed(window, staff)
        if ticket is None:
            done = [t for t in hall.tickets.values()
                    if t.window == window and t.state == TicketState.FINISHED
                    and t.finished_at is not None]
            if not done:
                raise DomainError("conflict", "nothing-to-rate",
                                  f"window {window} has finished no ticket today", "ticket")
            t = max(done, key=lambda x: x.finished_at or x.issued_at)
        else:
            t = hall.ticket(ticket)
        if t.window != window or t.state != TicketState.FINISHED:
            raise DomainError("conflict", "not-served-here",
                              f"ticket {t.number} was not finished at window {window}",
                              "ticket")
        if t.staff != w.staff:
            raise DomainError("forbidden", "served-by-someone-else",
                              f"ticket {t.number} was served by {t.staff}, not {w.staff}",
                              "ticket")
        if t.id in self.closed or any(r.ticket == t.id for r in self.pending.values()):
            raise DomainError("conflict", "already-requested",
                              f"a rating of ticket {t.number} was already requested",
                              "ticket")
        # Validated; only now may state change (a refusal must change nothing).
        events = self.sweep(hall)
        old = self.pending.get(window)
        if old is not None:
            # The window moved on: the previous applicant did not rate.
            events.append(self._missing(hall, old, "superseded"))
        now = self.clock.now()
        r = RatingRequest(t.id, t.number, t.service, window, w.staff or "", now,
                          now + self.window)
        self.pending[window] = r
        events.append(DomainEvent("rating.requested", {
            **self._ref(r), "requested_at": rfc3339(hall.local(now)),
            "deadline": rfc3339(hall.local(r.deadline)),
        }))
        return r, events

    def submit(self, hall: Hall, s: Submission) -> tuple[Outcome, list[DomainEvent]]:
        """Bind a rating to its request, or refuse it (a rating.rejected event, nothing else)."""
        if s.level in BAD_LEVELS and s.channel == "tablet" and self.reason_required \
                and not (s.reason or "").strip():
            # Not a broken binding: the tablet must ask the applicant why, then send again.
            raise DomainError("invalid", "reason-required",
                              f"{LEVEL_NAMES[s.level]} needs a reason; ask the applicant why",
                              "reason")
        hall._window(s.window)
        events = self.sweep(hall)
        now = self.clock.now()
        r = self.pending.get(s.window)
        target = s.ticket or (r.ticket if r else None)
        rule, detail = self._broken_rule(hall, s, r, target)
        if rule is not None:
            self.rejected[rule] += 1
            events.append(DomainEvent("rating.rejected", {
                "window": s.window, "ticket": target, "rule": rule, "detail": detail,
                "level": s.level.value, "channel": s.channel, "device": s.device,
            }))
            return Outcome(False, rule, detail, target, s.level), events
        assert r is not None
        del self.pending[s.window]
        self.closed[r.ticket] = "rated"
        self.last_closed[s.window] = r.ticket
        bad = s.level in BAD_LEVELS
        reason = (s.reason or "").strip() or None
        events.append(DomainEvent("rating.submitted", {
            **self._ref(r), "level": s.level.value, "level_name": LEVEL_NAMES[s.level],
            "score": LEVEL_SCORES[s.level], "reason": reason,
            # A bad rating without a reason (4-key device) still needs someone to ask why.
            "follow_up": bad and reason is None,
            "channel": s.channel, "device": s.device,
            "requested_at": rfc3339(hall.local(r.requested_at)),
            "latency_ms": int((now - r.requested_at).total_seconds() * 1000),
            **({"snapshot": s.snapshot} if s.snapshot and bad else {}),
        }))
        return Outcome(True, None, f"{LEVEL_NAMES[s.level]} recorded for {r.number}", r.ticket,
                       s.level), events

    def _broken_rule(self, hall: Hall, s: Submission, r: RatingRequest | None,
                     target: str | None) -> tuple[str | None, str]:
        if r is not None and target == r.ticket:
            staff_now = hall.windows[s.window].staff
            if staff_now != r.staff:
                return "staff-not-logged-in", (
                    f"{r.staff}, who served {r.number}, is not logged in at window {s.window}")
            return None, ""
        if target is not None:
            elsewhere = next((p for p in self.pending.values() if p.ticket == target), None)
            if elsewhere is not None:
                return "wrong-window", (f"ticket {elsewhere.number} is rated at window "
                                        f"{elsewhere.window}, not {s.window}")
            fate = self.closed.get(target)
            if fate == "rated":
                return "already-rated", f"ticket {target} has been rated already"
            if fate is not None:
                return "too-late", f"ticket {target} ended {UNRATED} ({fate.split(':')[1]})"
            if r is not None:
                return "wrong-ticket", (f"window {s.window} asked to rate {r.number}, "
                                        f"not {target}")
        elif r is None and s.window in self.last_closed:
            # A keypad cannot name the ticket: judge by what this window saw last.
            last = self.last_closed[s.window]
            fate = self.closed.get(last, "")
            if fate == "rated":
                return "already-rated", f"ticket {last} has been rated already"
            if fate.startswith("missing"):
                return "too-late", f"ticket {last} ended {UNRATED} ({fate.split(':')[1]})"
        if hall.windows[s.window].staff is None:
            return "staff-not-logged-in", f"nobody is logged in at window {s.window}"
        return "no-request", f"window {s.window} has not asked for a rating"

    # ---- restore -------------------------------------------------------------------------
    def restore(self, hall: Hall, envelopes: list[dict[str, Any]]) -> None:
        """Rebuild today's open requests and outcomes from the journal's rating events."""
        self.pending.clear()
        self.closed.clear()
        self.last_closed.clear()
        self.day = hall.day
        for env in envelopes:
            d = env["data"]
            t = d.get("ticket")
            if not t or not hall.day or not t.startswith(hall.day.replace("-", "")):
                continue
            if env["type"] == "rating.requested":
                self.pending[d["window"]] = RatingRequest(
                    t, d["number"], d["service"], d["window"], d["staff"],
                    datetime.fromisoformat(d["requested_at"]),
                    datetime.fromisoformat(d["deadline"]))
            elif env["type"] in ("rating.submitted", "rating.missing"):
                if self.pending.get(d["window"]) and self.pending[d["window"]].ticket == t:
                    del self.pending[d["window"]]
                self.closed[t] = "rated" if env["type"] == "rating.submitted" \
                    else f"missing:{d['reason']}"
                if d.get("reason") != "not_requested":
                    self.last_closed[d["window"]] = t
            elif env["type"] == "rating.rejected":
                self.rejected[d["rule"]] += 1
