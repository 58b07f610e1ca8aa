"""Rating binding rules through the runtime: every refusal is an event; no rating defaults."""

from __future__ import annotations

import pytest

from edge.domain.errors import DomainError
from edge.domain.rating import FOUR_KEY, LEVEL_NAMES, Level, Submission, parse_level
from tests.supervision_fixtures import check_schema, journal, serve_ticket, sync_ratings


def tablet(window: int, level: Level, ticket: str | None = None,
           reason: str | None = None) -> Submission:
    return Submission(window, level, "tablet", f"eval-w{window}", ticket, reason)


def test_finish_requests_rating_and_tablet_rating_binds(runtime):
    rt = runtime
    svc = sync_ratings(rt)
    tid = serve_ticket(rt, 1, "S001")
    req = svc.pending_for(1)
    assert req is not None and req.ticket == tid and req.staff == "S001"
    out = svc.submit(tablet(1, Level.SATISFIED, tid))
    assert out.accepted and out.ticket == tid
    [ev] = journal(rt, "rating.submitted")
    assert ev["data"]["ticket"] == tid and ev["data"]["staff"] == "S001"
    assert ev["data"]["level_name"] == "满意" and ev["data"]["score"] == 4
    assert ev["data"]["follow_up"] is False
    types = [e["type"] for e in journal(rt)]
    assert types.index("ticket.finished") < types.index("rating.requested")
    for e in journal(rt, "rating.requested", "rating.submitted"):
        check_schema(e)


@pytest.mark.parametrize("rule", ["no-request", "wrong-window", "already-rated", "too-late",
                                  "staff-not-logged-in"])
def test_each_broken_rule_is_refused_and_counted(runtime, clock, rule):
    rt = runtime
    svc = sync_ratings(rt)
    if rule == "no-request":
        rt.execute(lambda h: (None, h.login("S002", 2)))
        sub = tablet(2, Level.VERY_SATISFIED)
    else:
        tid = serve_ticket(rt, 1, "S001")
        sub = tablet(1, Level.VERY_SATISFIED, tid)
        if rule == "wrong-window":
            rt.execute(lambda h: (None, h.login("S002", 2)))
            sub = tablet(2, Level.VERY_SATISFIED, tid)
        elif rule == "already-rated":
            assert svc.submit(sub).accepted
        elif rule == "too-late":
            clock.advance(rt.config.rating.window_seconds + 1)
        elif rule == "staff-not-logged-in":
            rt.execute(lambda h: (None, h.logout(1)))
    before = len(journal(rt, "rating.submitted"))
    out = svc.submit(sub)
    assert not out.accepted and out.rule == rule
    assert len(journal(rt, "rating.submitted")) == before  # nothing recorded as a rating
    [rej] = journal(rt, "rating.rejected")
    assert rej["data"]["rule"] == rule
    check_schema(rej)
    assert svc.desk.rejected[rule] == 1


def test_unrated_ticket_ends_unrated_never_satisfied(runtime, clock):
    rt = runtime
    svc = sync_ratings(rt)
    tid = serve_ticket(rt, 3, "S003")
    clock.advance(rt.config.rating.window_seconds - 1)
    svc.sweep()
    assert journal(rt, "rating.missing") == []  # still inside its time
    clock.advance(2)
    svc.sweep()
    [miss] = journal(rt, "rating.missing")
    assert miss["data"]["ticket"] == tid and miss["data"]["result"] == "未评价"
    assert miss["data"]["reason"] == "timeout"
    check_schema(miss)
    assert journal(rt, "rating.submitted") == []
    svc.sweep()  # idempotent
    assert len(journal(rt, "rating.missing")) == 1


def test_next_request_supersedes_unanswered_one(runtime):
    rt = runtime
    svc = sync_ratings(rt)
    first = serve_ticket(rt, 1, "S001")
    second = serve_ticket(rt, 1, "S001")
    [miss] = journal(rt, "rating.missing")
    assert miss["data"]["ticket"] == first and miss["data"]["reason"] == "superseded"
    assert svc.pending_for(1).ticket == second
    out = svc.submit(tablet(1, Level.SATISFIED, first))
    assert out.rule == "too-late"


def test_bad_rating_needs_reason_on_tablet_but_not_keypad(runtime):
    rt = runtime
    svc = sync_ratings(rt)
    tid = serve_ticket(rt, 1, "S001")
    with pytest.raises(DomainError) as e:
        svc.submit(tablet(1, Level.DISSATISFIED, tid))
    assert e.value.code == "reason-required"
    assert journal(rt, "rating.rejected", "rating.submitted") == []  # the request stays open
    assert svc.submit(tablet(1, Level.DISSATISFIED, tid, "等候时间长")).accepted
    [ev] = journal(rt, "rating.submitted")
    assert ev["data"]["reason"] == "等候时间长" and ev["data"]["follow_up"] is False
    tid2 = serve_ticket(rt, 1, "S001")
    out = svc.submit(Submission(1, FOUR_KEY[4], "keypad", "eval-key-1"))
    assert out.accepted and out.ticket == tid2
    ev2 = journal(rt, "rating.submitted")[-1]
    assert ev2["data"]["level_name"] == "不满意" and ev2["data"]["follow_up"] is True
    # The keypad pressed again: a second rating of the same ticket.
    assert svc.submit(Submission(1, FOUR_KEY[1], "keypad", "eval-key-1")).rule == \
        "already-rated"


def test_wrong_ticket_at_right_window(runtime):
    rt = runtime
    svc = sync_ratings(rt)
    serve_ticket(rt, 1, "S001")
    out = svc.submit(tablet(1, Level.SATISFIED, "20261123-A999"))
    assert out.rule == "wrong-ticket"


def test_request_rules(runtime):
    rt = runtime
    svc = sync_ratings(rt)
    tid = serve_ticket(rt, 1, "S001")
    with pytest.raises(DomainError) as e:
        svc.request(1, tid)
    assert e.value.code == "already-requested"
    rt.execute(lambda h: (None, h.login("S002", 2)))
    with pytest.raises(DomainError) as e:
        svc.request(2, tid)
    assert e.value.code == "not-served-here"
    with pytest.raises(DomainError) as e:
        svc.request(5)
    assert e.value.code == "window-not-logged-in"
    with pytest.raises(DomainError) as e:
        svc.request(2)
    assert e.value.code == "nothing-to-rate"


def test_state_survives_restart(hall_config, clock, tmp_path):
    from edge.runtime import HallRuntime

    rt = HallRuntime.open(hall_config, tmp_path / "d", clock=clock)
    rt.tick()
    first = sync_ratings(rt)  # exists before the first finish, as in `hallbox run`
    tid = serve_ticket(rt, 1, "S001")
    rated = serve_ticket(rt, 2, "S002")
    assert first.submit(tablet(2, Level.SATISFIED, rated)).accepted
    rt.close()
    rt2 = HallRuntime.open(hall_config, tmp_path / "d", clock=clock)
    svc = sync_ratings(rt2)
    assert svc.pending_for(1).ticket == tid
    assert svc.submit(tablet(2, Level.SATISFIED, rated)).rule == "already-rated"
    assert svc.submit(tablet(1, Level.VERY_SATISFIED, tid)).accepted
    rt2.close()


def test_levels_and_four_key_mapping():
    assert [LEVEL_NAMES[lv] for lv in Level] == ["非常满意", "满意", "基本满意", "不满意",
                                                 "非常不满意"]
    assert {k: LEVEL_NAMES[v] for k, v in FOUR_KEY.items()} == {
        1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意"}
    assert parse_level("满意") is Level.SATISFIED
    assert parse_level("very_dissatisfied") is Level.VERY_DISSATISFIED
    with pytest.raises(DomainError):
        parse_level("ok")


def test_finished_ticket_never_requested_ends_unrated(hall_config, clock, tmp_path):
    from edge.config import RatingSection
    from edge.runtime import HallRuntime

    cfg = hall_config.model_copy(update={"rating": RatingSection(auto_request=False)})
    rt = HallRuntime.open(cfg, tmp_path / "d", clock=clock)
    rt.tick()
    svc = sync_ratings(rt)
    try:
        first = serve_ticket(rt, 1, "S001")
        clock.advance(60)
        second = serve_ticket(rt, 1, "S001")
        svc.request(1, second)  # the staff page asks for the second one only
        clock.advance(cfg.rating.window_seconds - 30)
        svc.sweep()
        [miss] = journal(rt, "rating.missing")
        assert miss["data"]["ticket"] == first and miss["data"]["reason"] == "not_requested"
        check_schema(miss)
        assert svc.pending_for(1).ticket == second  # untouched by the sweep
        assert svc.submit(tablet(1, Level.SATISFIED, second)).accepted
        clock.advance(3600)
        svc.sweep()
        assert len(journal(rt, "rating.missing")) == 1
    finally:
        rt.close()
