"""Today's figures for the pages (edge/domain/today.py): plain functions over tickets/events."""

from __future__ import annotations

from datetime import timedelta

from edge.domain import today
from edge.domain.model import Priority, Source
from tests.conftest import SHANGHAI


def test_p90_nearest_rank() -> None:
    assert today.p90([]) is None
    assert today.p90([5]) == 5
    assert today.p90(list(range(1, 11))) == 9
    assert today.p90(list(range(1, 12))) == 10


def test_counts_waits_and_service_times_from_a_real_queue(hall, clock) -> None:
    a, _ = hall.issue("SHMS", Priority.NORMAL, Source.KIOSK)
    b, _ = hall.issue("SHMS", Priority.NORMAL, Source.KIOSK)
    c, _ = hall.issue("GA", Priority.NORMAL, Source.KIOSK)
    hall.login("S001", 1)
    clock.advance(minutes=6)
    hall.call_next(1, "S001")
    hall.start(1, "S001")
    clock.advance(minutes=4)
    hall.finish(1, "S001")
    clock.advance(minutes=2)
    hall.call_next(1, "S001")  # b waited 12 minutes
    hall.no_show(1, "S001")
    tickets = list(hall.tickets.values())
    f = today.ticket_counts(tickets)
    assert (f["tickets"], f["called"], f["served"], f["no_shows"], f["waiting"]) == (3, 2, 1, 1, 1)
    assert f["avg_wait_ms"] == 9 * 60_000 and f["p90_wait_ms"] == 12 * 60_000
    assert f["avg_service_ms"] == 4 * 60_000
    w1 = today.window_counts(tickets, 1)
    assert (w1["called"], w1["served"], w1["no_shows"]) == (2, 1, 1)
    assert today.window_counts(tickets, 2)["called"] == 0
    hours = today.by_hour(tickets, SHANGHAI)
    assert hours == [{"hour": 9, "tickets": 3, "avg_wait_ms": 9 * 60_000}]
    per = {s["service"]: s["tickets"] for s in today.by_service(tickets, {"SHMS": "社会民生",
                                                                          "GA": "公安",
                                                                          "RS": "人社"})}
    assert per == {"SHMS": 2, "GA": 1, "RS": 0}
    since = today.idle_since(tickets, 1, hall.windows[1].logged_in_at)
    assert since == clock.now()  # the no-show just now freed the window
    assert c.state == "waiting" and a.state == "finished" and b.state == "no_show"


def test_ratings_satisfaction_and_rated_share() -> None:
    def ev(type_: str, window: int, level: str | None = None) -> dict:
        d: dict = {"window": window}
        if level:
            d["level"] = level
        return {"type": type_, "data": d}

    events = [ev("rating.requested", 1), ev("rating.submitted", 1, "satisfied"),
              ev("rating.requested", 1), ev("rating.submitted", 1, "dissatisfied"),
              ev("rating.requested", 1), ev("rating.missing", 1),
              ev("rating.requested", 2), ev("rating.submitted", 2, "basically_satisfied")]
    r = today.rating_counts(events)
    assert (r["requested"], r["rated"], r["unrated"]) == (4, 3, 1)
    assert r["satisfaction_rate"] == round(2 / 3, 4) and r["rated_share"] == 0.75
    w2 = today.rating_counts(events, 2)
    assert w2["satisfaction_rate"] == 1.0 and w2["levels"] == {"basically_satisfied": 1}
    empty = today.rating_counts([])
    assert empty["satisfaction_rate"] is None and empty["rated_share"] is None


def test_idle_since_is_the_login_when_nothing_ended_after(hall, clock) -> None:
    hall.login("S002", 2)
    login = hall.windows[2].logged_in_at
    assert today.idle_since([], 2, login) == login
    clock.advance(hours=1)
    assert today.idle_since([], 2, None) is None
    assert login is not None and login + timedelta(hours=1) == clock.now()
