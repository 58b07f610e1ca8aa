"""Supervision's local date of an event time, reused within a minute: the same as computing it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.supervision import Supervision

TZ = ZoneInfo("Asia/Shanghai")


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.tuples(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)),
    st.sampled_from([0, 8 * 60, -5 * 60, 5 * 60 + 30, 14 * 60])), min_size=1, max_size=30))
def test_the_reused_date_is_the_computed_date(times: list[tuple[datetime, int]]) -> None:
    svc = SimpleNamespace(_last_day=(None, date.min), rt=SimpleNamespace(hall=SimpleNamespace(
        tz=TZ)))
    for naive, minutes in times:
        for ts in (naive.replace(tzinfo=timezone(timedelta(minutes=minutes)))
                   .isoformat(timespec="milliseconds"),
                   naive.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")):
            want = datetime.fromisoformat(ts).astimezone(TZ).date()
            assert Supervision._day_of(svc, ts) == want, ts  # type: ignore[arg-type]


def test_midnight_in_the_hall_changes_the_date_within_one_utc_minute() -> None:
    svc = SimpleNamespace(_last_day=(None, date.min), rt=SimpleNamespace(hall=SimpleNamespace(
        tz=TZ)))
    before, after = "2026-11-24T23:59:59.999+08:00", "2026-11-25T00:00:00.000+08:00"
    assert Supervision._day_of(svc, before) == date(2026, 11, 24)  # type: ignore[arg-type]
    assert Supervision._day_of(svc, after) == date(2026, 11, 25)  # type: ignore[arg-type]
    assert Supervision._day_of(svc, before) == date(2026, 11, 24)  # type: ignore[arg-type]
