"""Whole simulated days on a fake clock: attendance records, proxy work, floor alerts."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from drivers.attendance import AttendanceDriver
from drivers.protocols import zk
from drivers.sim.zk_terminal import ZkTerminalSim
from edge.assembly import HallServices
from edge.config.supervision_devices import AttendanceTerminalConfig
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.domain.rating import Level, Submission
from edge.health import DeviceHealth
from edge.runtime import HallRuntime
from edge.supervision import Supervision
from tests.floor_supervision_fixtures import *  # noqa: F403  (fixtures)
from tests.floor_supervision_fixtures import at, check_schemas, journal, punch, rate
from tests.waiting import until


def records(rt: HallRuntime, staff: str) -> list[dict]:
    return [e["data"] for e in journal(rt, "attendance.recorded") if e["data"]["staff"] == staff]


def serve(rt: HallRuntime, window: int, minutes: int = 8) -> None:
    rt.execute(lambda h: h.call_next(window))
    rt.execute(lambda h: (None, h.start(window)))
    rt.clock.advance(minutes=minutes)  # type: ignore[attr-defined]
    rt.execute(lambda h: (None, h.finish(window)))


def test_normal_day_and_late_arrival(sup_rt: HallRuntime, sup: Supervision) -> None:
    rt = sup_rt
    punch(rt, "S001", at(23, 8, 20))
    punch(rt, "S002", at(23, 8, 47))  # late: 17 minutes
    rt.clock.set(at(23, 8, 50))  # type: ignore[attr-defined]
    rt.execute(lambda h: (None, h.login("S001", 1)))
    rt.execute(lambda h: (None, h.login("S002", 2)))
    for _ in range(6):
        rt.execute(lambda h: h.issue("SHMS"))
    for _ in range(3):
        serve(rt, 1)
        serve(rt, 2)
    assert sup.tick() == [] or all(e["type"] != "attendance.recorded" for e in sup.tick())
    punch(rt, "S001", at(23, 12, 1))
    punch(rt, "S001", at(23, 13, 29))
    punch(rt, "S002", at(23, 13, 10))  # no punch at noon; the 13:10 opens the afternoon
    punch(rt, "S001", at(23, 17, 32))
    punch(rt, "S002", at(23, 17, 5))  # left early: 25 minutes
    rt.clock.set(at(23, 17, 34))  # type: ignore[attr-defined]
    sup.tick()
    assert records(rt, "S001") == []  # the day is not over until 17:35 (end + grace)
    rt.clock.set(at(23, 17, 40))  # type: ignore[attr-defined]
    sup.tick()
    [s1] = records(rt, "S001")
    assert s1["statuses"] == ["on_time"] and s1["punches"] == 4
    assert s1["periods"][0]["clock_in"] == "08:20:00"
    [s2] = records(rt, "S002")
    assert s2["statuses"] == ["late", "left_early", "missing_punch"]
    assert (s2["late_minutes"], s2["early_minutes"], s2["missing_punches"]) == (17, 25, 1)
    # S007's own schedule ended at 17:00; nobody else punched: absent.
    assert records(rt, "S007")[0]["statuses"] == ["absent"]
    assert len(journal(rt, "attendance.recorded")) == len(rt.config.staff)
    # Nothing changed: a second evaluation journals nothing again.
    sup.tick()
    assert len(journal(rt, "attendance.recorded")) == len(rt.config.staff)
    # A punch read back late from the terminal corrects the judged day, once.
    rt.emit([DomainEvent(
        "punch.recorded", {"terminal": "zk-entrance", "user_id": "S002", "staff": "S002",
                           "name": None, "at": at(23, 12, 3).isoformat(timespec="milliseconds"),
                           "kind": "check_out", "punch": 1, "verify": 1, "source": "stored"})])
    sup.tick()
    assert records(rt, "S002")[-1]["statuses"] == ["late", "left_early"]
    assert len(records(rt, "S002")) == 2
    assert journal(rt, "anomaly.detected") == []  # both clocked in before calling
    check_schemas(rt)


def test_proxy_caller_is_an_anomaly_once(sup_rt: HallRuntime, sup: Supervision) -> None:
    rt = sup_rt
    rt.clock.set(at(23, 9, 0))  # type: ignore[attr-defined]
    rt.execute(lambda h: (None, h.login("S003", 3)))  # logged in with S003's PIN, no clock-in
    for _ in range(3):
        rt.execute(lambda h: h.issue("ZCDJ"))
    serve(rt, 3)
    serve(rt, 3)
    [a] = journal(rt, "anomaly.detected")
    assert a["data"]["kind"] == "called_without_clock_in"
    assert (a["data"]["staff"], a["data"]["window"], a["data"]["number"]) == ("S003", 3, "B001")
    # After a fingerprint at the window's sensor, calls are no anomaly.
    rt.emit([DomainEvent(
        "fingerprint.identified", {"sensor": "fp-w1", "window": 1, "matched": True,
                                   "staff": "S004", "page": 3, "score": 90,
                                   "purpose": "login"})])
    rt.execute(lambda h: (None, h.logout(3)))
    rt.execute(lambda h: (None, h.login("S004", 3)))
    serve(rt, 3)
    assert len(journal(rt, "anomaly.detected")) == 1
    # A restarted service remembers what it flagged today.
    rt2 = Supervision(rt, HallServices())
    rt.execute(lambda h: (None, h.logout(3)))
    rt.execute(lambda h: (None, h.login("S003", 3)))
    rt.execute(lambda h: h.issue("ZCDJ"))
    serve(rt, 3)
    assert len(journal(rt, "anomaly.detected")) == 1 and rt2 is not None
    check_schemas(rt)


def test_long_queue_yellow_red_cleared(sup_rt: HallRuntime, sup: Supervision) -> None:
    rt = sup_rt
    rt.clock.set(at(23, 9, 0))  # type: ignore[attr-defined]
    for n in (1, 2, 7, 11):  # every window serving SHMS is staffed: no unattended alert
        staff = {1: "S001", 2: "S002", 7: "S007", 11: "S011"}[n]
        punch(rt, staff, at(23, 9, 0))
        rt.execute(lambda h, n=n, s=staff: (None, h.login(s, n)))
    rt.execute(lambda h: h.issue("SHMS"))

    def alerts(kind: str = "longest_wait") -> list[tuple[str, str, bool | None]]:
        return [(e["type"], e["data"]["level"], e["data"].get("escalated"))
                for e in journal(rt, "alert.raised", "alert.cleared")
                if e["data"]["kind"] == kind]

    rt.clock.set(at(23, 9, 29, 59))  # type: ignore[attr-defined]
    sup.tick()
    assert alerts() == []
    rt.clock.set(at(23, 9, 30))  # type: ignore[attr-defined]
    sup.tick()
    assert alerts() == [("alert.raised", "yellow", False)]
    assert sup.open_alerts()[0]["subject"] == "service:SHMS"
    rt.clock.set(at(23, 9, 45))  # type: ignore[attr-defined]
    sup.tick()
    assert len(alerts()) == 1  # still yellow, nothing new
    rt.clock.set(at(23, 10, 0))  # type: ignore[attr-defined]
    sup.tick()
    assert alerts() == [("alert.raised", "yellow", False), ("alert.raised", "red", True)]
    serve(rt, 1)
    sup.tick()
    assert alerts()[-1] == ("alert.cleared", "red", None)
    cleared = journal(rt, "alert.cleared")[-1]["data"]
    # Raised at 09:30, measured again after serving, at 10:08.
    assert cleared["reason"] == "resolved" and cleared["duration_ms"] == 38 * 60_000
    assert sup.open_alerts() == []

    # Persisting: ZCDJ's red threshold is far (600 min), so only escalation turns it red.
    rt.execute(lambda h: h.issue("ZCDJ"))
    punch(rt, "S003", at(23, 10, 5))
    rt.execute(lambda h: (None, h.login("S003", 3)))
    rt.execute(lambda h: (None, h.login("S005", 4)))
    rt.clock.set(at(23, 10, 20))  # type: ignore[attr-defined]
    sup.tick()
    rt.clock.set(at(23, 10, 49))  # type: ignore[attr-defined]
    sup.tick()
    zc = [e["data"] for e in journal(rt, "alert.raised") if e["data"]["subject"] == "service:ZCDJ"]
    assert [(d["level"], d["threshold"]) for d in zc] == [("yellow", 10)]
    rt.clock.set(at(23, 10, 50))  # type: ignore[attr-defined]
    sup.tick()
    zc = [e["data"] for e in journal(rt, "alert.raised") if e["data"]["subject"] == "service:ZCDJ"]
    assert [(d["level"], d["escalated"], d["threshold"]) for d in zc] == [
        ("yellow", False, 10), ("red", True, None)]
    # A restart keeps the open alert: no second raise, and it clears once.
    again = Supervision(rt, HallServices())
    assert [(a["subject"], a["level"]) for a in again.open_alerts()
            if a["kind"] == "longest_wait"] == [("service:ZCDJ", "red")]
    check_schemas(rt)


def test_window_unattended_and_paused(sup_rt: HallRuntime, sup: Supervision) -> None:
    rt = sup_rt
    rt.clock.set(at(23, 9, 0))  # type: ignore[attr-defined]
    punch(rt, "S006", at(23, 9, 0))
    rt.execute(lambda h: h.issue("TZJS"))  # windows 6 and 7 serve TZJS; nobody is there
    sup.tick()
    rt.clock.set(at(23, 9, 5))  # type: ignore[attr-defined]
    sup.tick()
    raised = {e["data"]["subject"]: e["data"]["level"] for e in journal(rt, "alert.raised")
              if e["data"]["kind"] == "window_unattended"}
    assert raised == {"window:6": "yellow", "window:7": "yellow"}
    rt.execute(lambda h: (None, h.login("S006", 6)))
    rt.execute(lambda h: (None, h.login("S007", 7)))
    sup.tick()
    cleared = {e["data"]["subject"] for e in journal(rt, "alert.cleared")}
    assert {"window:6", "window:7"} <= cleared
    rt.execute(lambda h: (None, h.pause(6, "午休")))
    rt.clock.set(at(23, 9, 35))  # type: ignore[attr-defined]
    sup.tick()
    paused = [(e["data"]["level"]) for e in journal(rt, "alert.raised")
              if e["data"]["kind"] == "window_paused"]
    assert paused == ["red"]  # 30 minutes: straight to red
    rt.execute(lambda h: (None, h.resume(6)))
    sup.tick()
    assert not [a for a in sup.open_alerts() if a["kind"] == "window_paused"]


def test_bad_rating_alert_and_refused_ratings(sup_rt: HallRuntime, sup: Supervision,
                                              sup_services: HallServices) -> None:
    rt = sup_rt
    ratings = sup_services.ratings
    assert ratings is not None
    rt.clock.set(at(23, 9, 0))  # type: ignore[attr-defined]
    punch(rt, "S012", at(23, 9, 0))
    rt.execute(lambda h: (None, h.login("S012", 12)))
    rt.execute(lambda h: h.issue("SW"))
    serve(rt, 12)
    assert ratings.pending_for(12) is not None  # asked automatically on finishing
    rate(rt, sup_services, Submission(12, Level.DISSATISFIED, "tablet", "eval-w12",
                                      reason="等候时间长"))
    [a] = sup.open_alerts()
    assert (a["kind"], a["level"], a["reason"], a["staff"]) == ("bad_rating", "yellow",
                                                                "等候时间长", "S012")
    rt.clock.advance(minutes=31)  # type: ignore[attr-defined]
    sup.tick()
    assert sup.open_alerts()[0]["level"] == "red"  # nobody followed it up
    out = asyncio.run(sup.acknowledge(a["alert"], "manager"))
    assert out["reason"] == "acknowledged" and sup.open_alerts() == []
    # Three refusals out of three tries (threshold 3 and 50 %): an anomaly, once.
    for _ in range(4):
        rate(rt, sup_services, Submission(12, Level.VERY_SATISFIED, "tablet", "eval-w12"))
    [an] = journal(rt, "anomaly.detected")
    assert an["data"]["kind"] == "ratings_refused_often" and an["data"]["refused"] == 3
    check_schemas(rt)


def test_make_up_working_day(sup_rt: HallRuntime, sup: Supervision) -> None:
    rt = sup_rt
    # Friday 27th is a holiday, Saturday 28th a make-up working day (调休).
    punch(rt, "S001", at(27, 8, 30))
    for hh, mm in ((8, 25), (12, 0), (13, 30), (17, 30)):
        punch(rt, "S001", at(28, hh, mm))
    rt.clock.set(at(29, 10, 0))  # type: ignore[attr-defined]
    sup.tick()
    days = {(d["staff"], d["date"]): d["statuses"] for d in
            (e["data"] for e in journal(rt, "attendance.recorded"))}
    assert ("S001", "2026-11-27") not in days and ("S001", "2026-11-29") not in days
    assert days[("S001", "2026-11-28")] == ["on_time"]
    assert days[("S002", "2026-11-28")] == ["absent"]
    assert days[("S001", "2026-11-26")] == ["absent"]  # an ordinary Thursday, no punches
    week = sup.stats(at(23, 0).date(), at(29, 0).date(), "staff")
    s1 = next(r for r in week["rows"] if r["key"] == "S001")
    # Mon-Thu and Sat are working days; S001 punched only on Saturday.
    assert s1["attendance_rate"] == 20.0


def test_a_day_of_punches_over_the_zk_wire(sup_rt: HallRuntime, sup: Supervision) -> None:
    """Punches made at a ZKTeco terminal simulator (the protocol's bytes over loopback TCP),
    some stored while the box was away, judged into the day's records."""
    rt = sup_rt
    cfg = AttendanceTerminalConfig(id="zk-entrance", host="127.0.0.1", timeout_ms=1000,
                                   users={"1001": "S001", "1002": "S002"})
    users = [zk.ZkUser(1, "1001", "王芳"), zk.ZkUser(2, "1002", "李娜")]

    async def scenario() -> None:
        sim = ZkTerminalSim(users)
        await sim.start()
        # Made before the box connects: pulled from the terminal's log.
        sim.punch("1001", datetime(2026, 11, 23, 8, 21))
        sim.punch("1002", datetime(2026, 11, 23, 8, 52))
        drv = AttendanceDriver(rt, cfg, endpoint=sim.endpoint)
        await drv.start()
        try:
            await asyncio.wait_for(drv.synced.wait(), 10)
            for uid, hh, mm in (("1001", 12, 1), ("1001", 13, 28), ("1001", 17, 33),
                                ("1002", 12, 5), ("1002", 13, 31), ("1002", 17, 30)):
                sim.punch(uid, datetime(2026, 11, 23, hh, mm), punch=1 if hh != 13 else 0)
            await until(lambda: len(journal(rt, "punch.recorded")) == 8)
        finally:
            await drv.stop()
            await sim.stop()

    asyncio.run(scenario())
    rt.clock.set(at(23, 18, 0))  # type: ignore[attr-defined]
    sup.tick()
    assert records(rt, "S001")[0]["statuses"] == ["on_time"]
    s2 = records(rt, "S002")[0]
    assert s2["statuses"] == ["late"] and s2["late_minutes"] == 22
    assert [p["source"] for p in (e["data"] for e in journal(rt, "punch.recorded"))][:2] == [
        "stored", "stored"]
    # One staff member at two windows stays refused.
    rt.execute(lambda h: (None, h.login("S001", 1)))
    with pytest.raises(DomainError):
        rt.execute(lambda h: (None, h.login("S001", 2)))


def test_restart_between_two_schedules_ends(sup_rt: HallRuntime, sup: Supervision) -> None:
    """S007's day ends at 17:00, the others' at 17:35: a restart in between still judges the
    others once, and never journals S007's record twice."""
    rt = sup_rt  # nobody punches: a replayed punch must not be what triggers the judging
    rt.clock.set(at(23, 17, 10))  # type: ignore[attr-defined]
    sup.tick()
    assert [d["staff"] for d in (e["data"] for e in journal(rt, "attendance.recorded"))] == [
        "S007"]
    rt.bus._subs.clear()  # the old service is gone
    again = Supervision(rt, HallServices())
    rt.clock.set(at(23, 17, 40))  # type: ignore[attr-defined]
    again.tick()
    staff = [e["data"]["staff"] for e in journal(rt, "attendance.recorded")]
    assert sorted(staff) == sorted(s.id for s in rt.config.staff)
    again.tick()
    assert len(journal(rt, "attendance.recorded")) == len(rt.config.staff)


def test_device_fault_and_outbox_alerts(sup_rt: HallRuntime, sup: Supervision) -> None:
    rt = sup_rt
    rt.clock.set(at(23, 9, 0))  # type: ignore[attr-defined]

    def levels(kind: str) -> list[tuple[str, str]]:
        return [(e["type"], e["data"]["level"]) for e in journal(rt, "alert.raised",
                                                                 "alert.cleared")
                if e["data"]["kind"] == kind]

    rt.health.report(DeviceHealth("printer-kiosk-1", "printer", False, "B", "paper out"))
    rt.health.report(DeviceHealth("board-w3", "board", True, "C", "slow answers"))
    sup.tick()
    assert levels("device_fault") == [("alert.raised", "yellow")]  # grade C is no alert
    rt.health.report(DeviceHealth("printer-kiosk-1", "printer", False, "A", "cutter jammed"))
    sup.tick()
    assert levels("device_fault")[-1] == ("alert.raised", "red")
    rt.health.report(DeviceHealth("printer-kiosk-1", "printer", True, None, ""))
    sup.tick()
    assert levels("device_fault")[-1] == ("alert.cleared", "red")

    def link(unsent: int) -> None:
        rt.health.report(DeviceHealth("mqtt-link", "link", True, None, "", {
            "backlog": 1, "oldest_unsent_s": 0, "unsent_bytes": unsent, "quota_bytes": 1000,
            "boot": 1, "inflight": 0}))

    link(499)
    sup.tick()
    assert levels("outbox_quota") == []
    link(500)
    sup.tick()
    link(850)
    sup.tick()
    link(100)
    sup.tick()
    assert levels("outbox_quota") == [("alert.raised", "yellow"), ("alert.raised", "red"),
                                      ("alert.cleared", "red")]
    check_schemas(rt)
