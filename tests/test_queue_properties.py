"""Queue invariants over random operation sequences (hypothesis state machine).

Held after every step: no ticket served twice, none lost, FIFO within a class, the starvation
cap, unique numbers per service and day, window/ticket consistency, and refused operations
change nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge.clock import FakeClock
from edge.config import parse_config
from edge.domain.errors import DomainError
from edge.domain.model import ACTIVE_AT_WINDOW, DomainEvent, Priority, TicketState
from edge.domain.queue import Hall
from tests.conftest import MONDAY_0900

PIN = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
CONFIG = parse_config({
    "hall": {"site": "t", "box": "b", "name": "测试大厅", "hours": ["00:00-24:00"],
             "days": [1, 2, 3, 4, 5, 6, 7]},
    "queue": {"priority_streak_cap": 2, "recall_cap": 1, "no_show_reactivate_minutes": 10,
              "appointment_early_minutes": 60, "appointment_late_minutes": 10},
    "services": [{"code": "S1", "name": "一", "prefix": "A", "daily_cap": 60},
                 {"code": "S2", "name": "二", "prefix": "B", "daily_cap": 60},
                 {"code": "S3", "name": "三", "prefix": "C", "daily_cap": 60}],
    "windows": [{"number": 1, "name": "1", "services": ["S1"]},
                {"number": 2, "name": "2", "services": ["S1", {"service": "S2", "weight": 2}]},
                {"number": 3, "name": "3", "services": ["S2", "S3"]}],
    "staff": [{"id": f"P{i}", "name": f"员工{i}", "department": "d", "pin_hash": PIN}
              for i in range(1, 5)],
})
WINDOWS = st.sampled_from([1, 2, 3])
SERVICES = st.sampled_from(["S1", "S2", "S3"])


class QueueMachine(RuleBasedStateMachine):
    config = CONFIG

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(MONDAY_0900)
        self.hall = Hall(self.config, self.clock)
        self.hall.open_day_if_needed()
        self.issued: set[str] = set()
        self.finished: Counter[str] = Counter()
        self.started: Counter[str] = Counter()
        self.appointments = 0

    def snapshot(self) -> str:
        h = self.hall
        return json.dumps([
            {k: t.to_doc() for k, t in h.tickets.items()},
            {n: w.to_doc() for n, w in h.windows.items()}, h.counters,
            {c: a.to_doc() for c, a in h.appointments.items()}, h.day,
        ], sort_keys=True, default=str)

    def attempt(self, op: Any) -> list[DomainEvent]:
        before = self.snapshot()
        try:
            out = op()
        except DomainError:
            assert self.snapshot() == before, "a refused operation changed state"
            return []
        events: list[DomainEvent] = out[1] if isinstance(out, tuple) else out
        for ev in events:
            if ev.type == "ticket.issued":
                assert ev.data["ticket"] not in self.issued
                self.issued.add(ev.data["ticket"])
            elif ev.type == "ticket.finished":
                self.finished[ev.data["ticket"]] += 1
            elif ev.type == "ticket.started":
                self.started[ev.data["ticket"]] += 1
            elif ev.type == "day.opened":
                self.issued.clear()
        self.hall.dirty.clear()
        return events

    @rule(service=SERVICES, green=st.booleans())
    def issue(self, service: str, green: bool) -> None:
        self.attempt(lambda: self.hall.issue(service, Priority.GREEN if green else
                                             Priority.NORMAL))

    @rule(service=SERVICES, greens=st.integers(0, 4), normals=st.integers(0, 2))
    def issue_burst(self, service: str, greens: int, normals: int) -> None:
        for _ in range(greens):
            self.attempt(lambda: self.hall.issue(service, Priority.GREEN))
        for _ in range(normals):
            self.attempt(lambda: self.hall.issue(service))

    @rule(window=WINDOWS, times=st.integers(1, 4))
    def serve(self, window: int, times: int) -> None:
        """call-next, start and finish: the everyday loop at a window."""
        for _ in range(times):
            self.call_next(window)
            self.start(window)
            self.finish(window)

    @rule(service=SERVICES, minutes=st.integers(-30, 90))
    def book_and_check_in(self, service: str, minutes: int) -> None:
        self.appointments += 1
        code = f"AP{self.appointments:04d}"
        slot = self.clock.now() + timedelta(minutes=minutes)
        self.attempt(lambda: self.hall.book(code, service, slot, slot + timedelta(minutes=30)))
        self.attempt(lambda: self.hall.check_in(code))

    @rule(seconds=st.integers(1, 900))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(staff=st.sampled_from(["P1", "P2", "P3", "P4"]), window=WINDOWS)
    def login(self, staff: str, window: int) -> None:
        self.attempt(lambda: self.hall.login(staff, window))

    @rule(window=WINDOWS)
    def logout(self, window: int) -> None:
        self.attempt(lambda: self.hall.logout(window))

    @rule(window=WINDOWS)
    def call_next(self, window: int) -> None:
        h = self.hall
        now = self.clock.now()
        expected, rule_name = (None, "") if h.windows[window].staff is None else h.pick_next(window)
        streak = h.windows[window].priority_streak
        waiting = [t for t in h.tickets.values() if t.state == TicketState.WAITING
                   and h._serves(window, t.service)]
        # Keys as they were when the choice was made: calling a ticket clears its `front`.
        fifo = {t.id: h._fifo_key(t) for t in waiting}
        events = self.attempt(lambda: h.call_next(window))
        if not events:
            return
        called = h.tickets[events[0].data["ticket"]]
        assert called is expected
        cls = h.classify(called, now)
        # FIFO within a class and service (due appointments: by slot, then by arrival)
        def order(t: Any) -> tuple[Any, ...]:
            return (t.slot_start, *fifo[t.id]) if cls == "appointment" else fifo[t.id]

        for other in waiting:
            if other is not called and other.service == called.service \
                    and h.classify(other, now) == cls:
                assert order(called) <= order(other), "FIFO within class broken"
        # starvation cap: a priority call while normal tickets wait only below the cap
        normal_waiting = any(h.classify(t, now) == "normal" for t in waiting)
        if rule_name in ("appointment", "green") and normal_waiting:
            assert streak < h.policy.priority_streak_cap
        assert h.windows[window].priority_streak <= h.policy.priority_streak_cap or \
            not normal_waiting

    @rule(window=WINDOWS, pick=st.integers(0, 50))
    def call_out_of_order(self, window: int, pick: int) -> None:
        waiting = self.hall.waiting()
        if waiting:
            t = waiting[pick % len(waiting)]
            self.attempt(lambda: self.hall.call(window, t.number, "特殊情况"))

    @rule(window=WINDOWS)
    def start(self, window: int) -> None:
        self.attempt(lambda: self.hall.start(window))

    @rule(window=WINDOWS)
    def finish(self, window: int) -> None:
        self.attempt(lambda: self.hall.finish(window))

    @rule(window=WINDOWS)
    def recall(self, window: int) -> None:
        self.attempt(lambda: self.hall.recall(window))

    @rule(window=WINDOWS)
    def no_show(self, window: int) -> None:
        self.attempt(lambda: self.hall.no_show(window))

    @rule(pick=st.integers(0, 50))
    def reactivate(self, pick: int) -> None:
        gone = [t for t in self.hall.tickets.values() if t.state == TicketState.NO_SHOW]
        if gone:
            t = gone[pick % len(gone)]
            self.attempt(lambda: self.hall.reactivate(t.id))

    @rule(window=WINDOWS, service=SERVICES)
    def transfer(self, window: int, service: str) -> None:
        self.attempt(lambda: self.hall.transfer(window, service))

    @rule(window=WINDOWS, reason=st.sampled_from(["午休", "", "系统故障"]))
    def pause(self, window: int, reason: str) -> None:
        self.attempt(lambda: self.hall.pause(window, reason))

    @rule(window=WINDOWS)
    def resume(self, window: int) -> None:
        self.attempt(lambda: self.hall.resume(window))

    @rule()
    def next_day(self) -> None:
        self.clock.advance(hours=24)
        self.attempt(self.hall.open_day_if_needed)

    @invariant()
    def no_ticket_served_twice(self) -> None:
        assert all(n == 1 for n in self.finished.values())
        assert all(n == 1 for n in self.started.values())

    @invariant()
    def none_lost(self) -> None:
        assert self.issued == set(self.hall.tickets)

    @invariant()
    def numbers_unique_per_service_and_day(self) -> None:
        keys = [(t.day, t.service, t.number) for t in self.hall.tickets.values()]
        assert len(keys) == len(set(keys))
        for service, last in self.hall.counters.items():
            nums = sorted(t.seq_no for t in self.hall.tickets.values() if t.service == service)
            assert nums == list(range(1, last + 1))

    @invariant()
    def windows_and_tickets_agree(self) -> None:
        h = self.hall
        held = {w.current: n for n, w in h.windows.items() if w.current}
        for t in h.tickets.values():
            if t.state in ACTIVE_AT_WINDOW:
                assert held.get(t.id) == t.window
            else:
                assert t.id not in held
        for _n, w in h.windows.items():
            if w.current:
                assert w.staff is not None

    @invariant()
    def waiting_index_holds_every_waiting_ticket(self) -> None:
        # call-next and the counts read the hall's index of waiting tickets by service, not
        # the whole day's tickets: it must hold exactly the waiting ones, under their service.
        h = self.hall
        for code in h.services:
            scan = {t.id for t in h.tickets.values()
                    if t.state == TicketState.WAITING and t.service == code}
            assert set(h._queued.get(code, {})) == scan
            assert h.waiting_count(code) == len(scan)
            assert [t.id for t in h.waiting(code)] == sorted(
                scan, key=lambda i: h._fifo_key(h.tickets[i]))

    @invariant()
    def people_ahead_are_counted_exactly(self) -> None:
        # ahead() bisects the service's FIFO index; counted here the long way.
        h = self.hall
        for t in h.tickets.values():
            want = 0 if t.state != TicketState.WAITING else sum(
                1 for x in h.tickets.values() if x.state == TicketState.WAITING
                and x.service == t.service and h._fifo_key(x) < h._fifo_key(t))
            assert h.ahead(t) == want, t.number


QueueMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestQueueInvariants = QueueMachine.TestCase


class FrontTransferMachine(QueueMachine):
    """The same invariants with transfers sent to the front of the new queue: a transferred
    ticket once joined the FIFO index under its old key and was never called."""

    config = CONFIG.model_copy(update={
        "queue": CONFIG.queue.model_copy(update={"transfer_mode": "front"})})


FrontTransferMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestQueueInvariantsFrontTransfers = FrontTransferMachine.TestCase


@given(issues=st.lists(st.tuples(SERVICES, st.booleans(), st.integers(0, 90)), min_size=2,
                       max_size=40),
       calls=st.lists(WINDOWS, min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_each_class_of_each_service_is_called_in_arrival_order(
        issues: list[tuple[str, bool, int]], calls: list[int]) -> None:
    """Plain sequences (no reactivation): within a service, normal tickets are called in the
    order they were issued, and so are green ones, whichever window calls them.

    The state machine above checks this too, but rarely holds two waiting normal tickets of
    one service at a calling window; this finds a broken FIFO every run."""
    clock = FakeClock(MONDAY_0900)
    h = Hall(CONFIG, clock)
    h.open_day_if_needed()
    for i, n in enumerate((1, 2, 3)):
        h.login(f"P{i + 1}", n)
    order: dict[tuple[str, bool], list[str]] = {}
    for service, green, gap in issues:
        clock.advance(gap)
        t, _ = h.issue(service, Priority.GREEN if green else Priority.NORMAL)
        order.setdefault((service, green), []).append(t.id)
    called: dict[tuple[str, bool], list[str]] = {}
    for window in calls:
        t, _ = h.call_next(window)
        if t is not None:
            called.setdefault((t.service, t.priority == Priority.GREEN), []).append(t.id)
            h.no_show(window)
    for key, ids in called.items():
        assert ids == order[key][:len(ids)], f"{key}: called out of arrival order"
