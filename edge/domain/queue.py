"""The queue engine: issue, call, serve, finish, with the hall's calling policy.

Every operation validates first and mutates after, so a refused operation changes nothing. Each
returns the events that record what it did; the caller persists them with the changed state.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections import deque
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge.clock import Clock
from edge.config import HallConfig, WindowConfig
from edge.config.base import parse_span
from edge.domain.errors import DomainError
from edge.domain.model import (
    TERMINAL,
    Appointment,
    AppointmentState,
    Dirty,
    DomainEvent,
    Priority,
    Source,
    Ticket,
    TicketState,
    WindowState,
)
from edge.events import rfc3339

_PRIORITY_CLASSES = (Priority.APPOINTMENT, Priority.GREEN)


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


class Hall:
    def __init__(self, config: HallConfig, clock: Clock, *, ignore_hours: bool = False) -> None:
        self.cfg = config
        self.policy = config.queue
        self.clock = clock
        self.tz = ZoneInfo(config.hall.timezone)
        self.ignore_hours = ignore_hours
        self.services = {s.code: s for s in config.services}
        self.window_cfg: dict[int, WindowConfig] = {w.number: w for w in config.windows}
        self.staff = {s.id: s for s in config.staff}
        self.day: str | None = None
        self.tickets: dict[str, Ticket] = {}
        # The waiting tickets by service, exactly: a ticket enters in _new_ticket, reactivate
        # and restore, and leaves in _do_call and cancel (a new day empties it). Call-next
        # looks only at its window's services, and counts are len(): with 250 windows calling
        # at once, scanning and sorting the day's waiting tickets was most of a call's time.
        self._queued: dict[str, dict[str, Ticket]] = {}
        # FIFO heaps of the NORMAL-priority waiting tickets by service: (fifo key, id). An
        # entry is stale once its ticket left WAITING or its key changed (reactivate pushes a
        # new one); stale entries are dropped when they reach the top.
        self._fifo: dict[str, list[tuple[tuple[bool, datetime, int], str]]] = {}
        # GREEN and APPOINTMENT waiting tickets by service: few, scanned (due-ness moves).
        self._special: dict[str, dict[str, Ticket]] = {}
        # Every waiting ticket of a service in FIFO order, as (*fifo key, id), and each one's
        # entry: "people ahead" (every ticket answer and issued event) is a bisection, not a
        # pass over a queue that reaches a thousand in a big hall's morning.
        self._order: dict[str, list[tuple[bool, datetime, int, str]]] = {}
        self._order_entry: dict[str, tuple[bool, datetime, int, str]] = {}
        self._serving: dict[str, list[int]] = {}
        for n, wc in self.window_cfg.items():
            for s in wc.services:
                self._serving.setdefault(s.service, []).append(n)
        self.counters: dict[str, int] = {}
        self.windows: dict[int, WindowState] = {n: WindowState(n) for n in self.window_cfg}
        self.appointments: dict[str, Appointment] = {}
        self.service_ms: dict[str, deque[int]] = {}
        self.dirty = Dirty()

    # ---- restore -------------------------------------------------------------------------
    def restore(self, day: str | None, tickets: list[Ticket], windows: list[WindowState],
                appointments: list[Appointment]) -> None:
        """Load persisted state (today's tickets, windows, open appointments)."""
        self.day = day
        self.tickets = {t.id: t for t in tickets if t.day == day}
        self._clear_queued()
        for t in self.tickets.values():
            if t.state == TicketState.WAITING:
                self._enqueue(t)
        self.counters = {}
        for t in self.tickets.values():
            self.counters[t.service] = max(self.counters.get(t.service, 0), t.seq_no)
        for w in windows:
            if w.number in self.windows:
                self.windows[w.number] = w
        self.appointments = {a.code: a for a in appointments}
        self.service_ms = {}
        done = sorted((t for t in self.tickets.values() if t.finished_at and t.started_at),
                      key=lambda t: t.finished_at or t.issued_at)
        for t in done:
            assert t.finished_at and t.started_at
            self._sample(t.service, _ms(t.finished_at - t.started_at))

    # ---- time ----------------------------------------------------------------------------
    def local(self, when: datetime | None = None) -> datetime:
        return (when or self.clock.now()).astimezone(self.tz)

    def business_day(self, when: datetime | None = None) -> str:
        return self.local(when).date().isoformat()

    def is_open(self, service: str, when: datetime | None = None) -> bool:
        if self.ignore_hours:
            return True
        local = self.local(when)
        if local.isoweekday() not in self.cfg.hall.days:
            return False
        spans = self.services[service].hours or self.cfg.hall.hours
        t = local.time()
        return any(a <= t < b for a, b in map(parse_span, spans))

    # ---- day -----------------------------------------------------------------------------
    def open_day_if_needed(self) -> list[DomainEvent]:
        """Daily reset: numbering restarts, yesterday's unfinished tickets and sessions end."""
        today = self.business_day()
        if self.day == today:
            return []
        now = self.clock.now()
        cancelled = []
        for t in self.tickets.values():
            if t.state not in TERMINAL:
                t.state = TicketState.CANCELLED
                t.end_reason = "day_closed"
                cancelled.append(t.id)
                self.dirty.tickets[t.id] = t
        logged_out = []
        for w in self.windows.values():
            if w.staff or w.current or w.paused:
                if w.staff:
                    logged_out.append({"window": w.number, "staff": w.staff})
                self.windows[w.number] = WindowState(w.number)
                self.dirty.windows.add(w.number)
        expired = []
        for a in self.appointments.values():
            if a.state == AppointmentState.BOOKED and self.business_day(a.slot_end) < today:
                a.state = AppointmentState.EXPIRED
                expired.append(a.code)
                self.dirty.appointments.add(a.code)
        prev = self.day
        self.day = today
        self.tickets = {}
        self._clear_queued()
        self.counters = {}
        self.service_ms = {}
        return [DomainEvent("day.opened", {
            "day": today, "previous_day": prev, "cancelled_tickets": cancelled,
            "logged_out": logged_out, "expired_appointments": expired,
            "at": rfc3339(self.local(now)),
        })]

    # ---- estimates -----------------------------------------------------------------------
    def _sample(self, service: str, ms: int) -> None:
        q = self.service_ms.setdefault(service, deque(maxlen=self.policy.recent_service_samples))
        q.append(ms)

    def avg_service_ms(self, service: str) -> int:
        q = self.service_ms.get(service)
        if q:
            return int(sum(q) / len(q))
        return int(self.services[service].avg_service_minutes * 60_000)

    def open_windows_for(self, service: str) -> int:
        ws = self.windows
        return sum(1 for n in self._serving.get(service, ())
                   if ws[n].staff and not ws[n].paused)

    # ---- the waiting index -----------------------------------------------------------------
    def _clear_queued(self) -> None:
        self._queued = {code: {} for code in self.services}
        self._fifo = {code: [] for code in self.services}
        self._special = {code: {} for code in self.services}
        self._order = {code: [] for code in self.services}
        self._order_entry = {}

    def _enqueue(self, t: Ticket) -> None:
        self._queued.setdefault(t.service, {})[t.id] = t
        entry = (*self._fifo_key(t), t.id)
        self._order_entry[t.id] = entry
        insort(self._order.setdefault(t.service, []), entry)
        if t.priority in _PRIORITY_CLASSES:
            self._special.setdefault(t.service, {})[t.id] = t
        else:
            heapq.heappush(self._fifo.setdefault(t.service, []), (self._fifo_key(t), t.id))

    def _dequeue(self, t: Ticket) -> None:
        """t leaves WAITING (its heap entry goes stale and is dropped at the top)."""
        self._queued.get(t.service, {}).pop(t.id, None)
        self._special.get(t.service, {}).pop(t.id, None)
        entry = self._order_entry.pop(t.id, None)
        if entry is not None:
            order = self._order[t.service]
            i = bisect_left(order, entry)
            if i < len(order) and order[i] == entry:
                del order[i]

    def _fifo_head(self, service: str) -> Ticket | None:
        """The first NORMAL-priority waiting ticket of a service, in FIFO order."""
        heap = self._fifo.get(service)
        if not heap:
            return None
        queued = self._queued.get(service, {})
        while heap:
            key, tid = heap[0]
            t = queued.get(tid)
            if t is not None and self._fifo_key(t) == key:
                return t
            heapq.heappop(heap)
        return None

    def waiting_count(self, service: str) -> int:
        return len(self._queued.get(service, ()))

    def waiting(self, service: str | None = None) -> list[Ticket]:
        if service is None:
            tickets = [t for q in self._queued.values() for t in q.values()]
            return sorted(tickets, key=self._fifo_key)
        queued = self._queued.get(service, {})
        return [queued[e[3]] for e in self._order.get(service, ())]

    def ahead(self, t: Ticket) -> int:
        """Tickets before `t` in its service's FIFO order (0 once it is not waiting)."""
        entry = self._order_entry.get(t.id)
        if entry is None or t.id not in self._queued.get(t.service, ()):
            return 0
        return bisect_left(self._order[t.service], entry[:3])

    def estimate_wait_ms(self, service: str, ahead: int) -> int:
        """People ahead shared over the open windows, times the recent mean service time."""
        windows = max(1, self.open_windows_for(service))
        return math.ceil(ahead / windows) * self.avg_service_ms(service)

    # ---- lookups -------------------------------------------------------------------------
    def _service(self, code: str, subject: str = "service") -> None:
        if code not in self.services:
            raise DomainError("not_found", "unknown-service", f"no service {code!r}", subject)

    def _window(self, number: int) -> WindowState:
        if number not in self.windows:
            raise DomainError("not_found", "unknown-window", f"no window {number}",
                              "window")
        return self.windows[number]

    def _staffed(self, number: int, staff: str | None) -> WindowState:
        w = self._window(number)
        if w.staff is None:
            raise DomainError("conflict", "window-not-logged-in",
                              f"nobody is logged in at window {number}", "window")
        if staff is not None and w.staff != staff:
            raise DomainError("forbidden", "not-your-window",
                              f"window {number} is staffed by {w.staff}, not {staff}",
                              "window")
        return w

    def ticket(self, ref: str, subject: str = "ticket") -> Ticket:
        """By id, or by number for today (A023)."""
        if ref in self.tickets:
            return self.tickets[ref]
        for t in self.tickets.values():
            if t.number == ref and t.transferred_to is None:
                return t
        raise DomainError("not_found", "unknown-ticket", f"no ticket {ref!r} today", subject)

    def _current(self, w: WindowState, *states: TicketState) -> Ticket:
        if w.current is None:
            raise DomainError("conflict", "no-current-ticket",
                              f"window {w.number} has no ticket called", "window")
        t = self.tickets[w.current]
        if states and t.state not in states:
            raise DomainError("conflict", "illegal-transition",
                              f"ticket {t.number} is {t.state.value}, needs "
                              + " or ".join(s.value for s in states), "window")
        return t

    def _serves(self, number: int, service: str) -> bool:
        return any(s.service == service for s in self.window_cfg[number].services)

    # ---- issuing -------------------------------------------------------------------------
    def _require_day(self) -> str:
        if self.day != self.business_day():
            raise DomainError("conflict", "day-not-open", "the business day is not open yet")
        return self.day

    def _new_ticket(self, service: str, priority: Priority, source: Source,
                    queued_at: datetime | None = None, front: bool = False) -> Ticket:
        day = self._require_day()
        n = self.counters.get(service, 0) + 1
        now = self.clock.now()
        number = f"{self.services[service].prefix}{n:03d}"
        t = Ticket(id=f"{day.replace('-', '')}-{number}", day=day, service=service, number=number,
                   seq_no=n, priority=priority, source=source, issued_at=now,
                   queued_at=queued_at or now, front=front)
        self.counters[service] = n
        self.tickets[t.id] = t
        self._enqueue(t)
        self.dirty.tickets[t.id] = t
        return t

    def _check_can_issue(self, service: str, subject: str = "service") -> None:
        self._require_day()
        self._service(service, subject)
        if not self.is_open(service):
            raise DomainError("closed", "service-closed",
                              f"service {service} is not open now", subject)
        cap = self.services[service].daily_cap
        if self.counters.get(service, 0) >= cap:
            raise DomainError("conflict", "daily-cap-reached",
                              f"service {service} has issued its {cap} tickets for today",
                              subject)

    def _issued_event(self, t: Ticket) -> DomainEvent:
        ahead = self.ahead(t)
        return DomainEvent("ticket.issued", {
            **self._tref(t), "priority": t.priority.value, "source": t.source.value,
            "ahead": ahead, "est_wait_ms": self.estimate_wait_ms(t.service, ahead),
            "day": t.day, "appointment": t.appointment,
            "transferred_from": t.transferred_from,
        })

    def issue(self, service: str, priority: Priority = Priority.NORMAL,
              source: Source = Source.KIOSK) -> tuple[Ticket, list[DomainEvent]]:
        if priority == Priority.APPOINTMENT:
            raise DomainError("invalid", "appointment-needs-check-in",
                              "appointment tickets come from checking in a booking",
                              "priority")
        self._check_can_issue(service)
        t = self._new_ticket(service, priority, source)
        return t, [self._issued_event(t)]

    # ---- appointments --------------------------------------------------------------------
    def book(self, code: str, service: str, slot_start: datetime,
             slot_end: datetime) -> list[DomainEvent]:
        self._service(service, "service")
        if slot_end <= slot_start:
            raise DomainError("invalid", "bad-slot", "slot_end must be after slot_start",
                              "slot_end")
        if slot_end <= self.clock.now():
            raise DomainError("invalid", "slot-in-past", "the slot has already ended",
                              "slot_end")
        if code in self.appointments:
            raise DomainError("conflict", "duplicate-appointment",
                              f"appointment {code} is already booked", "appointment")
        a = Appointment(code, service, slot_start, slot_end)
        self.appointments[code] = a
        self.dirty.appointments.add(code)
        return [DomainEvent("appointment.booked", {
            "code": code, "service": service, "slot_start": rfc3339(self.local(slot_start)),
            "slot_end": rfc3339(self.local(slot_end)),
        })]

    def check_in(self, code: str) -> tuple[Ticket, list[DomainEvent]]:
        a = self.appointments.get(code)
        if a is None:
            raise DomainError("not_found", "unknown-appointment", f"no appointment {code!r}",
                              "appointment")
        if a.state != AppointmentState.BOOKED:
            raise DomainError("conflict", "appointment-used",
                              f"appointment {code} is {a.state.value}", "appointment")
        now = self.clock.now()
        p = self.policy
        earliest = a.slot_start - timedelta(minutes=p.appointment_early_minutes)
        latest = a.slot_start + timedelta(minutes=p.appointment_late_minutes)
        if now < earliest:
            raise DomainError("conflict", "too-early",
                              f"check-in opens at {self.local(earliest):%H:%M}", "appointment")
        late = now > latest
        if late and (p.appointment_late_policy == "refuse" or (now > a.slot_end
                     and self.business_day(a.slot_end) != self.day)):
            raise DomainError("conflict", "too-late",
                              f"check-in closed at {self.local(latest):%H:%M}", "appointment")
        self._check_can_issue(a.service, "appointment")
        t = self._new_ticket(a.service, Priority.NORMAL if late else Priority.APPOINTMENT,
                             Source.APP)
        t.appointment = code
        t.slot_start = a.slot_start
        a.state = AppointmentState.CHECKED_IN
        a.ticket = t.id
        self.dirty.appointments.add(code)
        status = "late" if late else ("early" if now < a.slot_start else "on_time")
        return t, [
            DomainEvent("appointment.checked_in", {
                "code": code, "ticket": t.id, "number": t.number, "arrival": status}),
            self._issued_event(t),
        ]

    # ---- staff at windows ----------------------------------------------------------------
    def login(self, staff: str, window: int) -> list[DomainEvent]:
        if staff not in self.staff:
            raise DomainError("not_found", "unknown-staff", f"no staff {staff!r}",
                              "staff")
        w = self._window(window)
        allowed = self.staff[staff].windows
        if allowed is not None and window not in allowed:
            raise DomainError("forbidden", "window-not-allowed",
                              f"{staff} may not work at window {window}", "window")
        if w.staff == staff:
            return []  # logging in again to the same window is a no-op
        if w.staff is not None:
            raise DomainError("conflict", "window-taken",
                              f"window {window} is staffed by {w.staff}", "window")
        other = next((x for x in self.windows.values() if x.staff == staff), None)
        if other is not None:
            raise DomainError("conflict", "already-logged-in",
                              f"{staff} is logged in at window {other.number}; log out first",
                              "staff")
        w.staff = staff
        w.logged_in_at = self.clock.now()
        w.priority_streak = 0
        self.dirty.windows.add(window)
        return [DomainEvent("staff.logged_in", {"staff": staff, "window": window})]

    def logout(self, window: int, staff: str | None = None) -> list[DomainEvent]:
        w = self._staffed(window, staff)
        if w.current is not None:
            t = self.tickets[w.current]
            raise DomainError("conflict", "ticket-in-hand",
                              f"ticket {t.number} is {t.state.value} here; finish it first",
                              "window")
        who = w.staff
        self.windows[window] = WindowState(window)
        self.dirty.windows.add(window)
        return [DomainEvent("staff.logged_out", {"staff": who, "window": window})]

    def pause(self, window: int, reason: str, staff: str | None = None) -> list[DomainEvent]:
        w = self._staffed(window, staff)
        if not reason.strip():
            raise DomainError("invalid", "reason-required", "a pause needs a reason",
                              "reason")
        if w.paused:
            raise DomainError("conflict", "already-paused", f"window {window} is paused")
        if w.current is not None:
            raise DomainError("conflict", "ticket-in-hand",
                              "finish the current ticket before pausing", "window")
        w.paused, w.pause_reason = True, reason
        self.dirty.windows.add(window)
        return [DomainEvent("window.paused", {"window": window, "staff": w.staff,
                                              "reason": reason})]

    def resume(self, window: int, staff: str | None = None) -> list[DomainEvent]:
        w = self._staffed(window, staff)
        if not w.paused:
            raise DomainError("conflict", "not-paused", f"window {window} is not paused")
        w.paused, w.pause_reason = False, None
        self.dirty.windows.add(window)
        return [DomainEvent("window.resumed", {"window": window, "staff": w.staff})]

    # ---- calling -------------------------------------------------------------------------
    def _fifo_key(self, t: Ticket) -> tuple[bool, datetime, int]:
        return (not t.front, t.queued_at, t.seq_no)

    def _due(self, t: Ticket, now: datetime) -> bool:
        lead = timedelta(minutes=self.policy.appointment_due_lead_minutes)
        return t.slot_start is not None and now >= t.slot_start - lead

    def classify(self, t: Ticket, now: datetime) -> str:
        """'appointment' (due), 'green' or 'normal'; an early appointment waits as normal."""
        if t.priority == Priority.APPOINTMENT and self._due(t, now):
            return "appointment"
        if t.priority == Priority.GREEN:
            return "green"
        return "normal"

    def pick_next(self, window: int) -> tuple[Ticket | None, str]:
        """The ticket call-next would take at this window, and which rule chose it."""
        now = self.clock.now()
        w = self.windows[window]
        weights = {s.service: s.weight for s in self.window_cfg[window].services}
        appointment: list[Ticket] = []
        green: list[Ticket] = []
        heads: dict[str, Ticket] = {}  # each service's first "normal"-class ticket
        for service in weights:
            head = self._fifo_head(service)
            for t in self._special.get(service, {}).values():
                cls = self.classify(t, now)
                if cls == "appointment":
                    appointment.append(t)
                elif cls == "green":
                    green.append(t)
                elif head is None or self._fifo_key(t) < self._fifo_key(head):
                    head = t  # an appointment not yet due waits as normal
            if head is not None:
                heads[service] = head
        if not heads and not appointment and not green:
            return None, "empty"
        if heads and (appointment or green) \
                and w.priority_streak >= self.policy.priority_streak_cap:
            return self._pick_weighted(heads, weights, now), "starvation_cap"
        if appointment:
            return min(appointment,
                       key=lambda t: (t.slot_start, *self._fifo_key(t))), "appointment"
        if green:
            return min(green, key=self._fifo_key), "green"
        return self._pick_weighted(heads, weights, now), "fifo"

    def _pick_weighted(self, heads: dict[str, Ticket], weights: dict[str, float],
                       now: datetime) -> Ticket:
        """Among the services' first tickets: the longest weighted wait."""

        def score(t: Ticket) -> tuple[int, float, datetime, int]:
            waited = max(0.0, (now - t.queued_at).total_seconds())
            return (1 if t.front else 0, waited * weights[t.service],
                    -t.queued_at.timestamp(), -t.seq_no)  # type: ignore[return-value]

        return max(heads.values(), key=score)

    def _ready_to_call(self, window: int, staff: str | None) -> WindowState:
        w = self._staffed(window, staff)
        if w.paused:
            raise DomainError("conflict", "window-paused",
                              f"window {window} is paused; resume first", "window")
        if w.current is not None:
            t = self.tickets[w.current]
            raise DomainError("conflict", "ticket-in-hand",
                              f"ticket {t.number} is {t.state.value} here; finish, mark no-show "
                              "or transfer it first", "window")
        return w

    def _do_call(self, w: WindowState, t: Ticket, rule: str,
                 reason: str | None) -> list[DomainEvent]:
        now = self.clock.now()
        cls = self.classify(t, now)
        if rule in ("appointment", "green"):
            w.priority_streak += 1
        elif rule in ("fifo", "starvation_cap"):
            w.priority_streak = 0
        t.state = TicketState.CALLED
        t.window, t.staff, t.called_at = w.number, w.staff, now
        t.front = False
        self._dequeue(t)
        w.current = t.id
        self.dirty.tickets[t.id] = t
        self.dirty.windows.add(w.number)
        return [DomainEvent("ticket.called", {
            **self._tref(t), "window": w.number, "staff": w.staff, "priority": t.priority.value,
            "class": cls, "rule": rule, "reason": reason,
            "wait_ms": _ms(now - t.queued_at),
            "waiting_left": self.waiting_count(t.service),
        })]

    def call_next(self, window: int, staff: str | None = None) -> tuple[Ticket | None,
                                                                       list[DomainEvent]]:
        w = self._ready_to_call(window, staff)
        t, rule = self.pick_next(window)
        if t is None:
            return None, []
        return t, self._do_call(w, t, rule, None)

    def call(self, window: int, ticket: str, reason: str,
             staff: str | None = None) -> tuple[Ticket, list[DomainEvent]]:
        """Call a chosen ticket out of order; the reason is part of the record."""
        w = self._ready_to_call(window, staff)
        if not reason.strip():
            raise DomainError("invalid", "reason-required",
                              "calling out of order needs a reason", "reason")
        t = self.ticket(ticket)
        if t.state != TicketState.WAITING:
            raise DomainError("conflict", "illegal-transition",
                              f"ticket {t.number} is {t.state.value}, not waiting", "ticket")
        if not self._serves(window, t.service):
            raise DomainError("conflict", "service-not-at-window",
                              f"window {window} does not serve {t.service}", "ticket")
        return t, self._do_call(w, t, "out_of_order", reason)

    def recall(self, window: int, staff: str | None = None) -> list[DomainEvent]:
        w = self._staffed(window, staff)
        t = self._current(w, TicketState.CALLED)
        if t.recalls >= self.policy.recall_cap:
            raise DomainError("conflict", "recall-cap",
                              f"ticket {t.number} was recalled {t.recalls} times already; "
                              "mark it no-show", "window")
        t.recalls += 1
        self.dirty.tickets[t.id] = t
        return [DomainEvent("ticket.recalled", {**self._tref(t), "window": window,
                                                "staff": w.staff, "recalls": t.recalls})]

    def no_show(self, window: int, staff: str | None = None) -> list[DomainEvent]:
        w = self._staffed(window, staff)
        t = self._current(w, TicketState.CALLED)
        now = self.clock.now()
        t.state, t.no_show_at = TicketState.NO_SHOW, now
        w.current = None
        self.dirty.tickets[t.id] = t
        self.dirty.windows.add(window)
        return [DomainEvent("ticket.no_show", {**self._tref(t), "window": window,
                                               "staff": w.staff, "recalls": t.recalls})]

    def reactivate(self, ticket: str, window: int | None = None) -> list[DomainEvent]:
        """A no-show applicant came back in time: back to the front of the queue."""
        t = self.ticket(ticket)
        if t.state != TicketState.NO_SHOW or t.no_show_at is None:
            raise DomainError("conflict", "illegal-transition",
                              f"ticket {t.number} is {t.state.value}, not no_show", "ticket")
        if window is not None and not self._serves(window, t.service):
            raise DomainError("forbidden", "service-not-at-window",
                              f"window {window} does not serve {t.service}", "ticket")
        limit = timedelta(minutes=self.policy.no_show_reactivate_minutes)
        if self.clock.now() - t.no_show_at > limit:
            raise DomainError("conflict", "reactivate-expired",
                              f"ticket {t.number} was marked no-show more than "
                              f"{self.policy.no_show_reactivate_minutes} minutes ago",
                              "ticket")
        t.state, t.front = TicketState.WAITING, True
        self._enqueue(t)
        t.window = t.staff = t.called_at = t.no_show_at = None
        t.recalls = 0
        self.dirty.tickets[t.id] = t
        return [DomainEvent("ticket.reactivated", {**self._tref(t), "window": window})]

    def start(self, window: int, staff: str | None = None) -> list[DomainEvent]:
        w = self._staffed(window, staff)
        t = self._current(w, TicketState.CALLED)
        t.state, t.started_at = TicketState.SERVING, self.clock.now()
        self.dirty.tickets[t.id] = t
        return [DomainEvent("ticket.started", {**self._tref(t), "window": window,
                                               "staff": w.staff})]

    def finish(self, window: int, staff: str | None = None) -> list[DomainEvent]:
        w = self._staffed(window, staff)
        t = self._current(w, TicketState.SERVING)
        now = self.clock.now()
        assert t.started_at and t.called_at
        t.state, t.finished_at = TicketState.FINISHED, now
        w.current = None
        service_ms = _ms(now - t.started_at)
        self._sample(t.service, service_ms)
        self.dirty.tickets[t.id] = t
        self.dirty.windows.add(window)
        return [DomainEvent("ticket.finished", {
            **self._tref(t), "window": window, "staff": w.staff,
            "wait_ms": _ms(t.called_at - t.queued_at), "service_ms": service_ms,
            "called_at": rfc3339(self.local(t.called_at)),
            "started_at": rfc3339(self.local(t.started_at)),
        })]

    def transfer(self, window: int, to_service: str,
                 staff: str | None = None) -> tuple[Ticket, list[DomainEvent]]:
        """Send the applicant at this window to another service's queue under a new number."""
        w = self._staffed(window, staff)
        t = self._current(w, TicketState.CALLED, TicketState.SERVING)
        self._service(to_service, "service")
        if to_service == t.service:
            raise DomainError("invalid", "same-service",
                              f"ticket {t.number} is already in {to_service}", "service")
        self._check_can_issue(to_service)
        keep = self.policy.transfer_mode == "keep_arrival"
        # `front` before the ticket joins the queue: set afterwards, its place in the FIFO
        # index no longer matched its key, and call-next dropped it as stale (never called).
        new = self._new_ticket(to_service, t.priority, t.source,
                               queued_at=t.queued_at if keep else None, front=not keep)
        new.transferred_from = t.id
        new.appointment, new.slot_start = t.appointment, t.slot_start
        t.state, t.transferred_to, t.finished_at = TicketState.TRANSFERRED, new.id, \
            self.clock.now()
        w.current = None
        self.dirty.tickets[t.id] = t
        self.dirty.windows.add(window)
        return new, [
            DomainEvent("ticket.transferred", {
                **self._tref(t), "window": window, "staff": w.staff, "to_ticket": new.id,
                "to_number": new.number, "to_service": to_service,
                "mode": self.policy.transfer_mode}),
            self._issued_event(new),
        ]

    def cancel(self, ticket: str, reason: str) -> list[DomainEvent]:
        t = self.ticket(ticket, "ticket")
        if t.state != TicketState.WAITING:
            raise DomainError("conflict", "illegal-transition",
                              f"only a waiting ticket can be cancelled; {t.number} is "
                              f"{t.state.value}", "ticket")
        t.state, t.end_reason = TicketState.CANCELLED, reason
        self._dequeue(t)
        self.dirty.tickets[t.id] = t
        return [DomainEvent("ticket.cancelled", {**self._tref(t), "reason": reason})]

    # ---- views ---------------------------------------------------------------------------
    @staticmethod
    def _tref(t: Ticket) -> dict[str, Any]:
        return {"ticket": t.id, "number": t.number, "service": t.service}

    def current_ticket(self, window: int) -> Ticket | None:
        cur = self.windows[window].current
        return self.tickets[cur] if cur else None

    def board(self) -> dict[str, Any]:
        """The public view: what the hall board and the kiosk show. No staff names."""
        windows = []
        for n, w in sorted(self.windows.items()):
            cur = self.current_ticket(n)
            windows.append({
                "window": n, "name": self.window_cfg[n].name, "open": bool(w.staff),
                "paused": w.paused, "number": cur.number if cur else None,
                "state": cur.state.value if cur else None,
            })
        services = []
        for code, s in self.services.items():
            waiting = self.waiting_count(code)
            services.append({
                "service": code, "name": s.name, "prefix": s.prefix, "waiting": waiting,
                "est_wait_ms": self.estimate_wait_ms(code, waiting),
                "open": self.is_open(code), "issued": self.counters.get(code, 0),
                "daily_cap": s.daily_cap,
            })
        return {"day": self.day, "hall": self.cfg.hall.name, "windows": windows,
                "services": services}
