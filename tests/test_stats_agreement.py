"""The box's statistics API, the `stats.get` command and `hallbox central stats` over the
central database (SQLite and PostgreSQL) agree exactly on the same events."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.assembly import HallServices
from edge.central.store import CentralStore
from edge.cli import main
from edge.clock import FakeClock
from edge.config import parse_config
from edge.domain import stats
from edge.domain.rating import Level, Submission
from edge.link import protocol as P
from edge.link.commands import CommandRouter
from edge.runtime import HallRuntime
from tests.floor_supervision_fixtures import (
    at,
    punch,
    rate,
    raw_config,
    services_for,
    sweep_ratings,
)
from tests.link_fixtures import pg_database, pg_dsn

__all__ = ["pg_database", "pg_dsn"]
KEY = "stats-test-command-key"
MANAGER = {"authorization": "Bearer demo-manager-token"}


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[HallRuntime, HallServices]]:
    """Monday and Tuesday at four windows: served, no-shows, a reactivation, a transfer,
    ratings of every level, unrated tickets, a proxy caller, punches and absences."""
    cfg = parse_config(raw_config(mqtt={"url": "mqtt://127.0.0.1:1", "command_key": KEY}))
    rt = HallRuntime.open(cfg, tmp_path_factory.mktemp("box"), clock=FakeClock(at(23, 8, 0)))
    rt.tick()
    services = services_for(rt)
    svc = services.supervision
    ratings = services.ratings
    assert svc is not None and ratings is not None
    levels = list(Level)
    for day in (23, 24):
        rt.clock.set(at(day, 8, 0))  # type: ignore[attr-defined]
        rt.tick()
        for staff in ("S001", "S002", "S012"):
            punch(rt, staff, at(day, 8, 25 if day == 23 else 8 + int(staff[-1]) * 7 // 10))
        rt.clock.set(at(day, 8, 30))  # type: ignore[attr-defined]
        for staff, w in (("S001", 1), ("S002", 2), ("S012", 12), ("S003", 3)):
            rt.execute(lambda h, s=staff, w=w: (None, h.login(s, w)))
        for i in range(14):
            rt.clock.advance(minutes=3)  # type: ignore[attr-defined]
            rt.execute(lambda h, i=i: h.issue(("SHMS", "ZCDJ", "SW")[i % 3]))
        reactivated = False
        for i in range(5):
            for w in (1, 2, 12, 3):
                rt.clock.advance(minutes=2 + (i * w) % 7)  # type: ignore[attr-defined]
                rt.execute(lambda h, w=w: h.call_next(w))
                if rt.hall.windows[w].current is None:
                    continue
                if (i + w + day) % 5 == 0:
                    t = rt.hall.windows[w].current
                    rt.execute(lambda h, w=w: (None, h.no_show(w)))
                    if not reactivated:  # the first no-show of the day comes back in time
                        rt.execute(lambda h, t=t: (None, h.reactivate(t)))
                        reactivated = True
                    continue
                if (i + w) % 7 == 3:
                    rt.execute(lambda h, w=w: h.transfer(w, "RS"))
                    continue
                rt.execute(lambda h, w=w: (None, h.start(w)))
                rt.clock.advance(minutes=4 + (i + w) % 9)  # type: ignore[attr-defined]
                rt.execute(lambda h, w=w: (None, h.finish(w)))
                if (i + w) % 4 != 0 and ratings.pending_for(w) is not None:
                    lv = levels[(i * 3 + w + day) % 5]
                    rate(rt, services, Submission(w, lv, "tablet", f"eval-w{w}",
                                                  reason="等候时间长"))
        rt.clock.set(at(day, 17, 0))  # type: ignore[attr-defined]
        sweep_ratings(rt, services)
        for w in (1, 2, 12, 3):
            if rt.hall.windows[w].current is None:
                rt.execute(lambda h, w=w: (None, h.logout(w)))
        rt.clock.set(at(day, 18, 0))  # type: ignore[attr-defined]
        svc.tick()
    rt.clock.set(at(25, 8, 0))  # type: ignore[attr-defined]
    yield rt, services
    rt.close()


def box_api(box: tuple[HallRuntime, HallServices], by: str) -> dict:
    with TestClient(create_app(*box), base_url="http://127.0.0.1") as c:
        r = c.get(f"/api/v1/stats?from=2026-11-23&to=2026-11-24&by={by}", headers=MANAGER)
        assert r.status_code == 200, r.text
        return r.json()


def command(box: tuple[HallRuntime, HallServices], name: str, args: dict) -> dict:
    """Through the link's command plumbing: signed, checked, journalled, replied."""
    rt, services = box
    router = CommandRouter(rt, rt.config.mqtt, None, services.commands,  # type: ignore[arg-type]
                           services)
    site, box = rt.config.hall.site, rt.config.hall.box
    payload = json.dumps(P.make_command(KEY, site, box, name, args,
                                        now=rt.clock.now())).encode()  # the box's clock
    return asyncio.run(router.handle(name, payload))


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "central.db")
    return request.getfixturevalue("pg_dsn")


def central(box: tuple[HallRuntime, HallServices], dsn: str, by: str) -> dict:
    rt = box[0]
    store = CentralStore(dsn)
    store.insert(rt.store.events_after(0, 10**9))
    store.close()
    out = io.StringIO()
    site, box = rt.config.hall.site, rt.config.hall.box
    with contextlib.redirect_stdout(out):
        assert main(["central", "stats", "--db", dsn, f"{site}/{box}", "--from", "2026-11-23",
                     "--to", "2026-11-24", "--by", by]) == 0
    return json.loads(out.getvalue())


def test_the_figures_are_real(two_days: tuple[HallRuntime, HallServices]) -> None:
    """Not an agreement of empty tables: each figure has something in it."""
    w = box_api(two_days, "window")
    tot = w["total"]
    # 14 taken a day, plus the new number each transfer issues.
    assert tot["tickets"] == 28 + tot["transferred"] and tot["served"] > 10
    assert tot["no_shows"] >= 1
    assert tot["transferred"] >= 1 and tot["unrated"] >= 1
    assert all(tot["ratings"][lv] > 0 for lv in stats.LEVELS)
    assert {r["key"] for r in w["rows"]} == {1, 2, 3, 12}
    assert tot["p90_wait_ms"] >= tot["avg_wait_ms"] > 0
    s = box_api(two_days, "staff")
    rates = {r["key"]: r["attendance_rate"] for r in s["rows"]}
    assert rates["S001"] == 100.0 and rates["S003"] == 0.0  # S003 never clocked in
    assert next(r for r in s["rows"] if r["key"] == "S003")["anomalies"] == 2  # proxy, 2 days
    assert 3 not in [x["window"] for x in w["red_flag"]]  # an anomaly disqualifies
    assert [x["rank"] for x in w["red_flag"]] == list(range(1, len(w["red_flag"]) + 1))


@pytest.mark.parametrize("by", stats.DIMENSIONS)
def test_box_command_and_central_agree(two_days: tuple[HallRuntime, HallServices], dsn: str,
                                       by: str) -> None:
    api = box_api(two_days, by)
    reply = command(two_days, "stats.get", {"from": "2026-11-23", "to": "2026-11-24", "by": by})
    assert reply["ok"], reply
    assert reply["result"] == api
    assert central(two_days, dsn, by) == api


def test_stats_get_refusals(two_days: tuple[HallRuntime, HallServices]) -> None:
    r = command(two_days, "stats.get", {"from": "2025-01-01", "to": "2026-11-24"})
    assert not r["ok"] and r["error"]["code"] == "bad-args"
    assert r["error"]["detail"].startswith("to:")
    r = command(two_days, "attendance.summary", {"month": "2026-13"})
    assert not r["ok"] and r["error"]["code"] == "bad-args" and "month" in r["error"]["detail"]
    r = command(two_days, "attendance.summary", {"month": "2026-11"})
    assert r["ok"]
    s1 = next(x for x in r["result"]["staff"] if x["staff"] == "S001")
    assert s1["workdays"] == 2 and s1["attendance_rate"] == 100.0


def test_central_stats_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "c.db")
    assert main(["central", "stats", "--db", db, "no-slash", "--from", "2026-11-01",
                 "--to", "2026-11-02"]) == 2
    assert main(["central", "stats", "--db", db, "t/b", "--from", "2026-11-01",
                 "--to", "2028-11-02"]) == 2
    assert "--to: " in capsys.readouterr().err
    assert main(["central", "stats", "--db", db, "t/b", "--from", "2026-11-31",
                 "--to", "2026-12-02"]) == 2
    assert main(["central", "stats", "--db", db, "t/b", "--from", "2026-11-01",
                 "--to", "2026-11-02", "--by", "hour"]) == 2
    assert not (tmp_path / "c.db").exists()  # refused before touching the database
