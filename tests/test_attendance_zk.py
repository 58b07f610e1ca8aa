"""ZKTeco attendance through the real protocol bytes: simulator on loopback TCP ↔ driver."""

from __future__ import annotations

import asyncio
from datetime import datetime

from drivers.attendance import AttendanceDriver
from drivers.protocols import zk
from drivers.sim.zk_terminal import ZkTerminalSim
from edge.config.supervision_devices import AttendanceTerminalConfig
from edge.runtime import HallRuntime
from tests.supervision_fixtures import check_schema, journal
from tests.waiting import until

USERS = [
    zk.ZkUser(1, "1001", "王芳"),
    zk.ZkUser(2, "1002", "李娜"),
    zk.ZkUser(3, "2001", "张喆"),  # 喆 is in GBK but not in GB2312
    zk.ZkUser(4, "S008", "欧阳黄强"),
]
CFG = AttendanceTerminalConfig(id="zk-1", host="127.0.0.1", timeout_ms=1000,
                               users={"1001": "S001", "1002": "S002"})




def punches(rt: HallRuntime) -> list[dict]:
    return [e["data"] for e in journal(rt, "punch.recorded")]


def test_live_punch_becomes_attendance_event_with_gbk_names(runtime):
    rt = runtime

    async def scenario() -> None:
        sim = ZkTerminalSim(USERS)
        await sim.start()
        drv = AttendanceDriver(rt, CFG, endpoint=sim.endpoint)
        await drv.start()
        try:
            await asyncio.wait_for(drv.synced.wait(), 10)
            sim.punch("1001", datetime(2026, 11, 23, 8, 58, 3))
            sim.punch("2001", datetime(2026, 11, 23, 8, 59, 0), punch=0)
            sim.punch("S008", datetime(2026, 11, 23, 12, 1, 0), punch=1, status=15)
            await until(lambda: len(punches(rt)) == 3)
        finally:
            await drv.stop()
            await sim.stop()

    asyncio.run(scenario())
    got = punches(rt)
    assert [(p["user_id"], p["name"], p["staff"]) for p in got] == [
        ("1001", "王芳", "S001"), ("2001", "张喆", None), ("S008", "欧阳黄强", "S008")]
    assert got[0]["at"] == "2026-11-23T08:58:03.000+08:00" and got[0]["kind"] == "check_in"
    assert got[2]["kind"] == "check_out" and got[2]["verify"] == 15
    assert all(p["source"] == "live" for p in got)
    for e in journal(rt, "punch.recorded", "attendance.synced"):
        check_schema(e)
    health = journal(rt, "device.health")
    assert health[0]["data"]["device"] == "zk-1" and health[0]["data"]["online"]


def test_box_stopped_while_punches_happen_loses_none_and_doubles_none(hall_config, clock,
                                                                      tmp_path):
    data = tmp_path / "box"

    async def scenario() -> list[zk.ZkPunch]:
        sim = ZkTerminalSim(USERS)
        await sim.start()
        made: list[zk.ZkPunch] = []
        try:
            rt = HallRuntime.open(hall_config, data, clock=clock)
            drv = AttendanceDriver(rt, CFG, endpoint=sim.endpoint)
            await drv.start()
            await asyncio.wait_for(drv.synced.wait(), 10)
            for m in range(3):
                made.append(sim.punch("1001", datetime(2026, 11, 23, 8, 30 + m)))
            await until(lambda: len(punches(rt)) == 3)
            # The box goes down; punches keep happening at the terminal.
            await drv.stop()
            rt.close()
            for m in range(5):
                made.append(sim.punch("1002", datetime(2026, 11, 23, 9, m)))
            # Back up.
            rt = HallRuntime.open(hall_config, data, clock=clock)
            drv = AttendanceDriver(rt, CFG, endpoint=sim.endpoint)
            await drv.start()
            await asyncio.wait_for(drv.synced.wait(), 10)
            made.append(sim.punch("2001", datetime(2026, 11, 23, 9, 30)))
            await until(lambda: len(punches(rt)) == 9)
            # The link drops and comes back: the full log is pulled again, nothing doubles.
            drv.synced.clear()
            await sim.unplug()
            await sim.replug()
            await asyncio.wait_for(drv.synced.wait(), 10)
            await drv.stop()
            rt.close()
        finally:
            await sim.stop()
        return made

    made = asyncio.run(scenario())
    rt = HallRuntime.open(hall_config, data, clock=clock)
    try:
        got = punches(rt)
        assert len(got) == len(made) == 9
        assert sorted((p["user_id"], p["at"]) for p in got) == sorted(
            (m.user_id, m.when.isoformat() + ".000+08:00") for m in made)
        assert len({(p["user_id"], p["at"]) for p in got}) == 9
        assert sum(p["source"] == "stored" for p in got) >= 5  # made while the box was down
        synced = [e["data"] for e in journal(rt, "attendance.synced")]
        assert [s["new"] for s in synced][-1] == 0 and synced[-1]["stored"] == 9
    finally:
        rt.close()


def test_silent_terminal_times_out_and_goes_offline(runtime):
    rt = runtime

    async def scenario() -> AttendanceDriver:
        sim = ZkTerminalSim(USERS)
        sim.silent = True
        await sim.start()
        drv = AttendanceDriver(rt, CFG.model_copy(update={"timeout_ms": 300}),
                               endpoint=sim.endpoint)
        await drv.start()
        try:
            await until(lambda: drv.link.failures >= 2)
            assert not drv.synced.is_set()
            sim.silent = False
            await asyncio.wait_for(drv.synced.wait(), 10)
        finally:
            await drv.stop()
            await sim.stop()
        return drv

    asyncio.run(scenario())
    states = [(e["data"]["online"], e["data"]["detail"]) for e in journal(rt, "device.health")]
    assert any(not on and "no answer within 300 ms" in d for on, d in states)
    assert states[-1][0] is True


def test_unplug_replug_20_cycles(runtime):
    rt = runtime

    async def scenario() -> None:
        sim = ZkTerminalSim(USERS)
        await sim.start()
        drv = AttendanceDriver(rt, CFG, endpoint=sim.endpoint)
        await drv.start()
        try:
            await asyncio.wait_for(drv.synced.wait(), 10)
            for cycle in range(20):
                drv.synced.clear()
                await sim.unplug()
                await until(lambda: not drv.link.online)
                sim.punch("1001", datetime(2026, 11, 23, 10, cycle))  # while unplugged
                await sim.replug()
                await asyncio.wait_for(drv.synced.wait(), 10)  # recovers within 10 s
        finally:
            await drv.stop()
            await sim.stop()

    asyncio.run(scenario())
    got = punches(rt)
    assert len(got) == 20 and len({p["at"] for p in got}) == 20
    health = [e["data"]["online"] for e in journal(rt, "device.health")]
    assert health.count(False) >= 20 and health[-1] is True


def test_punch_made_during_the_pull_is_not_lost(runtime):
    """Live registration comes before the pull, so the gap between them loses nothing."""
    rt = runtime

    async def scenario() -> None:
        sim = ZkTerminalSim(USERS)
        await sim.start()
        sim.punch("1001", datetime(2026, 11, 23, 8, 0))
        sim.during_pull = lambda: sim.punch("1002", datetime(2026, 11, 23, 8, 1))
        drv = AttendanceDriver(rt, CFG, endpoint=sim.endpoint)
        await drv.start()
        try:
            await asyncio.wait_for(drv.synced.wait(), 10)
            await until(lambda: len(punches(rt)) == 2)
            sim.during_pull = None
            drv.synced.clear()
            await sim.unplug()
            await sim.replug()
            await asyncio.wait_for(drv.synced.wait(), 10)  # the next pull has both: no doubles
        finally:
            await drv.stop()
            await sim.stop()

    asyncio.run(scenario())
    got = punches(rt)
    assert sorted((p["user_id"], p["source"]) for p in got) == [("1001", "stored"),
                                                                ("1002", "live")]
