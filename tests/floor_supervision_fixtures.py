"""Fixtures for the supervision tests: a hall config with schedules and a calendar (a holiday
on Friday 2026-11-27 and a make-up working day on Saturday 2026-11-28), a runtime on a fake
clock, and helpers that journal punches as the attendance and fingerprint drivers do."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.assembly import HallServices
from edge.clock import FakeClock
from edge.config import HallConfig, parse_config
from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.link.commands import builtin_commands
from edge.ratings import RatingService
from edge.runtime import HallRuntime
from edge.schemas import event_schemas
from edge.supervision import Supervision, install
from tests.conftest import EXAMPLE_CONFIG, SHANGHAI

__all__ = ["sup", "sup_clock", "sup_config", "sup_rt", "sup_services"]

ATTENDANCE: dict[str, Any] = {
    "grace_minutes": 5,
    "default_schedule": "standard",
    "schedules": [
        {"id": "standard", "periods": ["08:30-12:00", "13:30-17:30"]},
        {"id": "early", "periods": ["08:00-12:00", "13:00-17:00"], "grace_minutes": 0},
    ],
    "staff": {"S007": "early"},
    "calendar": [
        {"date": "2026-11-27", "kind": "holiday", "name": "test holiday"},
        {"date": "2026-11-28", "kind": "workday", "name": "调休"},
    ],
}
ALERTS: dict[str, Any] = {
    "escalate_minutes": 30,
    "longest_wait_minutes": {"yellow": 30, "red": 60},
    "service_wait_minutes": {"ZCDJ": {"yellow": 10, "red": 600}},
    "unattended_minutes": {"yellow": 5, "red": 15},
    "paused_minutes": {"yellow": 15, "red": 30},
    "refused_ratings": {"min_count": 3, "percent": 50},
}


def raw_config(**sections: Any) -> dict[str, Any]:
    raw = tomllib.loads(Path(EXAMPLE_CONFIG).read_text(encoding="utf-8"))
    raw["attendance"] = ATTENDANCE
    raw["alerts"] = ALERTS
    raw.update(sections)
    return raw


def at(day: int, hh: int, mm: int = 0, ss: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hh, mm, ss, tzinfo=SHANGHAI)


@pytest.fixture(scope="session")
def sup_config() -> HallConfig:
    return parse_config(raw_config())


@pytest.fixture
def sup_clock() -> FakeClock:
    return FakeClock(at(23, 7, 30))


@pytest.fixture
def sup_rt(sup_config: HallConfig, sup_clock: FakeClock, tmp_path: Path
           ) -> Iterator[HallRuntime]:
    rt = HallRuntime.open(sup_config, tmp_path / "data", clock=sup_clock)
    rt.tick()
    yield rt
    rt.close()


def services_for(rt: HallRuntime) -> HallServices:
    """The hall services as the assembly builds them: ratings, commands, supervision."""
    assert rt.config.rating is not None
    services = HallServices(ratings=RatingService(rt, rt.config.rating),
                            commands=builtin_commands())
    install(rt, services)
    return services


@pytest.fixture
def sup_services(sup_rt: HallRuntime) -> HallServices:
    return services_for(sup_rt)


@pytest.fixture
def sup(sup_services: HallServices) -> Supervision:
    assert sup_services.supervision is not None
    return sup_services.supervision


def punch(rt: HallRuntime, staff: str, when: datetime, *, kind: int = 0,
          terminal: str = "zk-entrance") -> None:
    """A terminal punch as drivers/attendance.py journals it (the hall clock moves there)."""
    rt.clock.set(when)  # type: ignore[attr-defined]
    rt.emit([DomainEvent("punch.recorded", {
        "terminal": terminal, "user_id": staff, "staff": staff, "name": None,
        "at": rfc3339(when), "kind": "check_in" if kind == 0 else "check_out", "punch": kind,
        "verify": 1, "source": "live"})])


def journal(rt: HallRuntime, *types: str) -> list[dict[str, Any]]:
    return rt.store.events_after(0, 10**9, list(types) or None)


def check_schemas(rt: HallRuntime) -> None:
    fmt = jsonschema.Draft202012Validator.FORMAT_CHECKER
    schemas = event_schemas()
    for env in journal(rt):
        jsonschema.validate(env["data"], schemas[env["type"]], format_checker=fmt)


def rate(rt: HallRuntime, services: HallServices, sub: Any) -> Any:
    """A rating submitted the way RatingService.submit does, from synchronous test code."""
    assert services.ratings is not None
    desk = services.ratings.desk
    return rt.execute(lambda h: desk.submit(h, sub))


def sweep_ratings(rt: HallRuntime, services: HallServices) -> None:
    assert services.ratings is not None
    desk = services.ratings.desk
    rt.execute(lambda h: (None, desk.sweep(h)))
