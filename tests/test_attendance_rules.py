"""Attendance rules (pure): a day's record from punches, the calendar, leave; refusals of bad
schedules and calendars with their key paths."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import ConfigError, parse_config
from edge.domain.attendance import AttendanceRules, DayStatus, Leave, Punch, month_range
from edge.domain.errors import DomainError
from tests.floor_supervision_fixtures import ATTENDANCE, at, raw_config
from tests.floor_supervision_fixtures import sup_config as sup_config


@pytest.fixture
def rules(sup_config) -> AttendanceRules:
    return AttendanceRules(sup_config.attendance, sup_config.hall, sup_config.staff)


def p(staff: str, day: int, hh: int, mm: int, ss: int = 0, src: str = "terminal:zk") -> Punch:
    return Punch(at(day, hh, mm, ss), staff, src)


NOW = at(30, 23)


def test_normal_day(rules: AttendanceRules) -> None:
    punches = [p("S001", 23, 8, 20), p("S001", 23, 12, 2), p("S001", 23, 13, 25),
               p("S001", 23, 17, 31)]
    r = rules.day_record("S001", date(2026, 11, 23), punches, [], NOW)
    assert r.statuses == (DayStatus.ON_TIME,)
    d = r.to_data()
    assert [(x["clock_in"], x["clock_out"]) for x in d["periods"]] == [
        ("08:20:00", "12:02:00"), ("13:25:00", "17:31:00")]
    assert d["late_minutes"] == d["early_minutes"] == d["missing_punches"] == 0


def test_grace_edges_and_minutes(rules: AttendanceRules) -> None:
    on_edge = [p("S001", 23, 8, 35, 0), p("S001", 23, 17, 25, 0)]
    both = [*on_edge, p("S001", 23, 12, 0), p("S001", 23, 13, 30)]
    r = rules.day_record("S001", date(2026, 11, 23), both, [], NOW)
    assert r.statuses == (DayStatus.ON_TIME,)  # exactly start + grace, end - grace
    late = [p("S001", 23, 8, 35, 1), p("S001", 23, 12, 0), p("S001", 23, 13, 30),
            p("S001", 23, 17, 24, 59)]
    r = rules.day_record("S001", date(2026, 11, 23), late, [], NOW)
    assert r.statuses == (DayStatus.LATE, DayStatus.LEFT_EARLY)
    d = r.to_data()
    assert d["late_minutes"] == 5 and d["early_minutes"] == 6 and d["late"] == 1


def test_missing_punch_and_absent(rules: AttendanceRules) -> None:
    only_ends = [p("S002", 23, 8, 0), p("S002", 23, 18, 0)]
    r = rules.day_record("S002", date(2026, 11, 23), only_ends, [], NOW)
    assert r.statuses == (DayStatus.MISSING_PUNCH,) and r.to_data()["missing_punches"] == 2
    r = rules.day_record("S002", date(2026, 11, 23), [], [], NOW)
    assert r.statuses == (DayStatus.ABSENT,) and r.to_data()["missing_punches"] == 0


def test_punch_between_periods_belongs_to_the_nearer_half(rules: AttendanceRules) -> None:
    # The lunch gap 12:00-13:30 splits at 12:45: 12:44 closes the morning, 12:46 opens the
    # afternoon (and is on time for it).
    a = rules.day_record("S001", date(2026, 11, 23),
                         [p("S001", 23, 8, 0), p("S001", 23, 12, 44), p("S001", 23, 17, 40)],
                         [], NOW).to_data()["periods"]
    assert a[0]["clock_out"] == "12:44:00" and a[1]["clock_in"] is None
    b = rules.day_record("S001", date(2026, 11, 23),
                         [p("S001", 23, 8, 0), p("S001", 23, 12, 46), p("S001", 23, 17, 40)],
                         [], NOW).to_data()["periods"]
    assert b[0]["clock_out"] is None and b[1]["clock_in"] == "12:46:00"


def test_own_schedule_calendar_and_leave(rules: AttendanceRules) -> None:
    # S007 works 08:00-17:00 with no grace.
    r = rules.day_record("S007", date(2026, 11, 23),
                         [p("S007", 23, 8, 1), p("S007", 23, 12, 0), p("S007", 23, 13, 0),
                          p("S007", 23, 17, 0)], [], NOW)
    assert r.statuses == (DayStatus.LATE,) and r.schedule == "early"
    assert not rules.is_workday("S001", date(2026, 11, 27))  # holiday on a Friday
    assert rules.is_workday("S001", date(2026, 11, 28))  # 调休 on a Saturday
    assert not rules.is_workday("S001", date(2026, 11, 29))
    rest = rules.day_record("S001", date(2026, 11, 27), [p("S001", 27, 9, 0)], [], NOW)
    assert rest.statuses == (DayStatus.REST,) and not rest.counted
    leave = Leave("L1", "S001", date(2026, 11, 24), date(2026, 11, 25), "病假")
    r = rules.day_record("S001", date(2026, 11, 25), [], [leave], NOW)
    assert r.statuses == (DayStatus.ON_LEAVE,) and r.leave == "病假"


def test_a_day_is_judged_only_when_over(rules: AttendanceRules) -> None:
    r = rules.day_record("S001", date(2026, 11, 23), [p("S001", 23, 8, 0)], [], at(23, 17, 34, 59))
    assert r.statuses == (DayStatus.OPEN,) and not r.counted
    r = rules.day_record("S001", date(2026, 11, 23), [p("S001", 23, 8, 0)], [], at(23, 17, 35))
    assert r.statuses == (DayStatus.MISSING_PUNCH,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)),
                max_size=12), st.randoms(use_true_random=False))
def test_recomputation_is_deterministic(times, rnd: random.Random) -> None:
    cfg = parse_config(raw_config())
    rules = AttendanceRules(cfg.attendance, cfg.hall, cfg.staff)
    punches = [p("S001", 23, h, m, s) for h, m, s in times]
    shuffled = punches + punches[: len(punches) // 2]  # read twice from the terminal
    rnd.shuffle(shuffled)
    a = rules.records(date(2026, 11, 23), date(2026, 11, 24), punches, [], NOW, ["S001"])
    b = rules.records(date(2026, 11, 23), date(2026, 11, 24), shuffled, [], NOW, ["S001"])
    assert a == b
    assert [r.to_data() for r in a] == [r.to_data() for r in b]


def test_months() -> None:
    assert month_range("2026-11") == (date(2026, 11, 1), date(2026, 11, 30))
    assert month_range("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    assert month_range("2026-12")[1] == date(2026, 12, 31)
    for bad in ("2026-13", "2026-1", "26-11", "2026/11", "x"):
        with pytest.raises(DomainError) as e:
            month_range(bad)
        assert e.value.subject == "month"


def _issues(**attendance) -> dict[str, str]:
    raw = raw_config(attendance={**ATTENDANCE, **attendance})
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    return {i.path: i.message for i in e.value.issues}


def test_config_refusals_name_the_key() -> None:
    issues = _issues(schedules=[{"id": "standard",
                                 "periods": ["08:30-12:00", "11:30-13:00", "14:00-17:00"]}],
                     staff={})
    assert "attendance.schedules[0].periods[1]" in issues
    assert "overlaps" in issues["attendance.schedules[0].periods[1]"]
    issues = _issues(calendar=[{"date": "2026-10-01", "kind": "holiday"},
                               {"date": "2026-10-02", "kind": "holiday"},
                               {"date": "2026-10-01", "kind": "workday"}])
    assert issues == {"attendance.calendar[2].date":
                      "2026-10-01 is already listed as calendar[0]"}
    issues = _issues(staff={"S999": "standard", "S001": "night"})
    assert set(issues) == {"attendance.staff.S999", "attendance.staff.S001"}
    issues = _issues(default_schedule="nope")
    assert "attendance.default_schedule" in issues
    issues = _issues(schedules=[{"id": "standard", "periods": ["12:00-08:00"]}])
    assert "attendance.schedules.0.periods" in {k.replace("[", ".").replace("]", "")
                                                for k in issues}
    with pytest.raises(ConfigError) as e:
        parse_config(raw_config(alerts={"longest_wait_minutes": {"yellow": 30, "red": 20},
                                        "service_wait_minutes": {"NOPE": {"yellow": 1,
                                                                          "red": 2}}}))
    paths = {i.path for i in e.value.issues}
    assert "alerts.longest_wait_minutes" in paths


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12) | st.just("２０２６-１１"))
def test_month_and_date_parsers_refuse_cleanly(text: str) -> None:
    """Any text: a month range or a DomainError with its subject, nothing else."""
    from edge.domain.stats import parse_date

    try:
        first, last = month_range(text)
    except DomainError as e:
        assert e.subject == "month" and e.code == "bad-month"
    else:
        assert first.day == 1 and (last + timedelta(days=1)).day == 1
        assert text == first.strftime("%Y-%m")
    try:
        d = parse_date(text, "from")
    except DomainError as e:
        assert e.subject == "from"
    else:
        assert isinstance(d, date)
