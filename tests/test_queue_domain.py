"""The queue rules, scenario by scenario, on the pure domain with a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edge.clock import FakeClock
from edge.config import HallConfig
from edge.domain.errors import DomainError
from edge.domain.model import Priority, Source, TicketState
from edge.domain.queue import Hall
from tests.conftest import MONDAY_0900


def login(hall: Hall, staff: str, window: int) -> None:
    hall.login(staff, window)


def serve(hall: Hall, window: int) -> str:
    t, _ = hall.call_next(window)
    assert t is not None
    hall.start(window)
    hall.finish(window)
    return t.number


def test_numbers_count_per_service_and_day(hall: Hall) -> None:
    a = [hall.issue("SHMS")[0].number for _ in range(3)]
    b = hall.issue("ZCDJ")[0].number
    assert a == ["A001", "A002", "A003"]
    assert b == "B001"


def test_issue_event_tells_people_ahead_and_wait(hall: Hall) -> None:
    hall.issue("SHMS")
    hall.issue("SHMS")
    _t, events = hall.issue("SHMS")
    assert events[0].type == "ticket.issued"
    assert events[0].data["ahead"] == 2
    # no window open: one window assumed, 10 minutes per case from the config
    assert events[0].data["est_wait_ms"] == 2 * 10 * 60_000


def test_closed_outside_hours_and_on_weekend(hall: Hall, clock: FakeClock) -> None:
    clock.set(MONDAY_0900.replace(hour=12, minute=30))
    with pytest.raises(DomainError) as e:
        hall.issue("SHMS")
    assert e.value.code == "service-closed" and e.value.subject == "service"
    clock.set(MONDAY_0900.replace(hour=13, minute=30))
    hall.issue("SHMS")


def test_daily_cap(hall_config: HallConfig, clock: FakeClock) -> None:
    cfg = hall_config.model_copy(update={"services": [
        s.model_copy(update={"daily_cap": 2}) if s.code == "SHMS" else s
        for s in hall_config.services]})
    h = Hall(cfg, clock)
    h.open_day_if_needed()
    h.issue("SHMS")
    h.issue("SHMS")
    with pytest.raises(DomainError) as e:
        h.issue("SHMS")
    assert e.value.code == "daily-cap-reached"
    assert h.counters["SHMS"] == 2


def test_unknown_service_changes_nothing(hall: Hall) -> None:
    with pytest.raises(DomainError) as e:
        hall.issue("NOPE")
    assert e.value.kind == "not_found"
    assert hall.tickets == {} and not hall.dirty.tickets


def test_call_flow_and_illegal_transitions(hall: Hall) -> None:
    hall.issue("SHMS")
    with pytest.raises(DomainError) as e:
        hall.call_next(1)
    assert e.value.code == "window-not-logged-in"
    login(hall, "S001", 1)
    with pytest.raises(DomainError) as e:
        hall.finish(1)
    assert e.value.code == "no-current-ticket"
    t, ev = hall.call_next(1)
    assert t is not None and t.state == TicketState.CALLED
    assert ev[0].data["window"] == 1 and ev[0].data["rule"] == "fifo"
    with pytest.raises(DomainError) as e:
        hall.finish(1)  # called, not serving
    assert e.value.code == "illegal-transition"
    with pytest.raises(DomainError) as e:
        hall.call_next(1)  # a ticket is in hand
    assert e.value.code == "ticket-in-hand"
    hall.start(1)
    fin = hall.finish(1)[0]
    assert fin.data["service_ms"] == 0 and t.state == TicketState.FINISHED


def test_staff_one_window_at_a_time(hall: Hall) -> None:
    login(hall, "S001", 1)
    with pytest.raises(DomainError) as e:
        hall.login("S001", 2)
    assert e.value.code == "already-logged-in"
    with pytest.raises(DomainError) as e:
        hall.login("S002", 1)
    assert e.value.code == "window-taken"
    assert hall.login("S001", 1) == []  # same window again: nothing happens
    with pytest.raises(DomainError) as e:
        hall.call_next(1, staff="S002")
    assert e.value.code == "not-your-window"


def test_green_channel_before_normal_and_fifo_within_class(hall: Hall) -> None:
    login(hall, "S001", 1)
    n1 = hall.issue("SHMS")[0]
    hall.clock.advance(1)  # type: ignore[attr-defined]
    g1 = hall.issue("SHMS", Priority.GREEN)[0]
    hall.clock.advance(1)  # type: ignore[attr-defined]
    g2 = hall.issue("SHMS", Priority.GREEN)[0]
    order = [serve(hall, 1) for _ in range(3)]
    assert order == [g1.number, g2.number, n1.number]


def test_starvation_cap_lets_normal_through(hall: Hall, clock: FakeClock) -> None:
    cap = hall.policy.priority_streak_cap
    login(hall, "S001", 1)
    normal = hall.issue("SHMS")[0]
    for _ in range(cap + 2):
        clock.advance(1)
        hall.issue("SHMS", Priority.GREEN)
    called = []
    for _ in range(cap + 1):
        t, ev = hall.call_next(1)
        assert t is not None
        called.append((t.number, ev[0].data["rule"]))
        hall.start(1)
        hall.finish(1)
    assert called[cap] == (normal.number, "starvation_cap")
    assert [r for _, r in called[:cap]] == ["green"] * cap


def test_appointment_due_goes_first(hall: Hall, clock: FakeClock) -> None:
    login(hall, "S001", 1)
    hall.issue("SHMS", Priority.GREEN)
    slot = clock.now() + timedelta(minutes=20)
    hall.book("APP-0001", "SHMS", slot, slot + timedelta(minutes=30))
    appt, evs = hall.check_in("APP-0001")
    assert appt.priority == Priority.APPOINTMENT and appt.source == Source.APP
    assert evs[0].data["arrival"] == "early"
    # not due yet: the green ticket goes first
    assert hall.pick_next(1)[1] == "green"
    clock.advance(minutes=16)  # due 5 minutes before the slot
    t, rule = hall.pick_next(1)
    assert t is appt and rule == "appointment"


def test_appointment_check_in_windows(hall: Hall, clock: FakeClock) -> None:
    slot = clock.now() + timedelta(hours=1)
    hall.book("APP-0002", "SHMS", slot, slot + timedelta(minutes=30))
    with pytest.raises(DomainError) as e:
        hall.check_in("APP-0002")
    assert e.value.code == "too-early"
    clock.advance(minutes=80)  # 20 minutes late, beyond the 15 of grace: a normal ticket
    t, evs = hall.check_in("APP-0002")
    assert t.priority == Priority.NORMAL and evs[0].data["arrival"] == "late"
    with pytest.raises(DomainError) as e:
        hall.check_in("APP-0002")
    assert e.value.code == "appointment-used"
    with pytest.raises(DomainError) as e:
        hall.check_in("NOPE-1")
    assert e.value.kind == "not_found"


def test_late_policy_refuse(hall_config: HallConfig, clock: FakeClock) -> None:
    cfg = hall_config.model_copy(update={"queue": hall_config.queue.model_copy(
        update={"appointment_late_policy": "refuse"})})
    h = Hall(cfg, clock)
    h.open_day_if_needed()
    slot = clock.now() - timedelta(minutes=20)
    h.book("APP-0003", "SHMS", slot, slot + timedelta(minutes=60))
    with pytest.raises(DomainError) as e:
        h.check_in("APP-0003")
    assert e.value.code == "too-late"


def test_recall_cap_then_no_show_and_reactivate(hall: Hall, clock: FakeClock) -> None:
    login(hall, "S001", 1)
    t = hall.issue("SHMS")[0]
    hall.issue("SHMS")
    hall.call_next(1)
    for i in range(hall.policy.recall_cap):
        assert hall.recall(1)[0].data["recalls"] == i + 1
    with pytest.raises(DomainError) as e:
        hall.recall(1)
    assert e.value.code == "recall-cap"
    hall.no_show(1)
    assert t.state == TicketState.NO_SHOW and hall.windows[1].current is None
    hall.reactivate(t.number)
    assert t.state == TicketState.WAITING and t.front
    # reactivated tickets go before others of their class
    assert hall.pick_next(1)[0] is t
    hall.call_next(1)
    hall.no_show(1)
    clock.advance(minutes=hall.policy.no_show_reactivate_minutes + 1)
    with pytest.raises(DomainError) as e:
        hall.reactivate(t.number)
    assert e.value.code == "reactivate-expired"


def test_transfer_keep_arrival(hall: Hall, clock: FakeClock) -> None:
    login(hall, "S001", 1)
    first = hall.issue("SHMS")[0]
    clock.advance(60)
    other = hall.issue("ZCDJ")[0]  # arrived after `first`
    hall.call_next(1)
    hall.start(1)
    new, evs = hall.transfer(1, "ZCDJ")
    assert [e.type for e in evs] == ["ticket.transferred", "ticket.issued"]
    assert first.state == TicketState.TRANSFERRED and first.transferred_to == new.id
    assert new.number == "B002" and new.queued_at == first.queued_at
    assert hall.waiting("ZCDJ")[0] is new and hall.waiting("ZCDJ")[1] is other
    with pytest.raises(DomainError) as e:
        hall.transfer(1, "ZCDJ")
    assert e.value.code == "no-current-ticket"


def test_transfer_to_the_front_is_called_next(hall_config: HallConfig,
                                              clock: FakeClock) -> None:
    cfg = hall_config.model_copy(update={
        "queue": hall_config.queue.model_copy(update={"transfer_mode": "front"})})
    h = Hall(cfg, clock)
    h.open_day_if_needed()
    h.login("S001", 1)  # window 1 serves SHMS
    h.login("S002", 3)  # window 3 serves ZCDJ
    h.issue("SHMS")
    clock.advance(60)
    waiting = h.issue("ZCDJ")[0]
    h.call_next(1)
    h.start(1)
    new, _ = h.transfer(1, "ZCDJ")
    assert new.front and [t.number for t in h.waiting("ZCDJ")] == [new.number, waiting.number]
    assert h.ahead(new) == 0 and h.ahead(waiting) == 1
    assert h.call_next(3)[0] is new
    h.no_show(3)
    assert h.call_next(3)[0] is waiting


def test_pause_blocks_calls(hall: Hall) -> None:
    login(hall, "S001", 1)
    hall.issue("SHMS")
    with pytest.raises(DomainError) as e:
        hall.pause(1, "  ")
    assert e.value.code == "reason-required"
    hall.pause(1, "午休")
    with pytest.raises(DomainError) as e:
        hall.call_next(1)
    assert e.value.code == "window-paused"
    hall.resume(1)
    assert hall.call_next(1)[0] is not None


def test_out_of_order_call_needs_reason_and_service(hall: Hall) -> None:
    login(hall, "S001", 1)
    hall.issue("SHMS")
    second = hall.issue("SHMS")[0]
    b = hall.issue("ZCDJ")[0]
    with pytest.raises(DomainError) as e:
        hall.call(1, b.number, "老人")
    assert e.value.code == "service-not-at-window"
    t, evs = hall.call(1, second.number, "老人行动不便")
    assert t is second and evs[0].data["rule"] == "out_of_order"
    assert evs[0].data["reason"] == "老人行动不便"


def test_weighted_services_at_a_window(hall: Hall, clock: FakeClock) -> None:
    # window 4 serves ZCDJ with weight 2 and JYXK with weight 1
    login(hall, "S004", 4)
    c = hall.issue("JYXK")[0]
    clock.advance(60)
    b = hall.issue("ZCDJ")[0]
    clock.advance(40)  # c waited 100 s x1, b waited 40 s x2 = 80: c first
    assert hall.pick_next(4)[0] is c
    clock.advance(30)  # c 130 x1, b 70 x2 = 140: b first
    assert hall.pick_next(4)[0] is b


def test_day_rollover_resets_numbers_and_ends_sessions(hall: Hall, clock: FakeClock) -> None:
    login(hall, "S001", 1)
    t = hall.issue("SHMS")[0]
    hall.call_next(1)
    clock.advance(hours=24)
    evs = hall.open_day_if_needed()
    assert evs[0].type == "day.opened"
    assert evs[0].data["cancelled_tickets"] == [t.id]
    assert evs[0].data["logged_out"] == [{"window": 1, "staff": "S001"}]
    assert t.state == TicketState.CANCELLED and hall.windows[1].staff is None
    assert hall.issue("SHMS")[0].number == "A001"
    assert hall.open_day_if_needed() == []


def test_estimated_wait_uses_recent_service_times(hall: Hall, clock: FakeClock) -> None:
    login(hall, "S001", 1)
    login(hall, "S002", 2)
    for _ in range(3):
        hall.issue("SHMS")
    for w in (1, 2):
        hall.call_next(w)
        hall.start(w)
        clock.advance(120)
        hall.finish(w)
    assert hall.avg_service_ms("SHMS") == 120_000
    # 3 ahead over 2 open windows -> 2 rounds of the mean service time
    assert hall.estimate_wait_ms("SHMS", 3) == 2 * hall.avg_service_ms("SHMS")
