"""Core fixtures: the example hall config, a fake clock on a Monday morning, a runtime."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.assembly import HallServices
from edge.clock import FakeClock
from edge.config import HallConfig, load_config
from edge.domain.queue import Hall
from edge.ratings import RatingService
from edge.runtime import HallRuntime

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "hall.example.toml"
SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY_0900 = datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)


@pytest.fixture(scope="session")
def hall_config() -> HallConfig:
    return load_config(EXAMPLE_CONFIG)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MONDAY_0900)


@pytest.fixture
def hall(hall_config: HallConfig, clock: FakeClock) -> Hall:
    h = Hall(hall_config, clock)
    h.open_day_if_needed()
    h.dirty.clear()
    return h


@pytest.fixture
def runtime(hall_config: HallConfig, clock: FakeClock, tmp_path: Path) -> Iterator[HallRuntime]:
    rt = HallRuntime.open(hall_config, tmp_path / "data", clock=clock)
    rt.tick()
    yield rt
    rt.close()


def db_of(rt: HallRuntime) -> sqlite3.Connection:
    """A connection of the test's own to the box's database file, for inspecting (and, in
    tamper tests, damaging) it the way an outside tool would."""
    return sqlite3.connect(rt.store.path, isolation_level=None)


@pytest.fixture
def services(runtime: HallRuntime) -> HallServices:
    """The hall services as the assembly builds them (the rating service, created before the
    first ticket is finished, as in `hallbox run`)."""
    assert runtime.config.rating is not None
    return HallServices(ratings=RatingService(runtime, runtime.config.rating))
