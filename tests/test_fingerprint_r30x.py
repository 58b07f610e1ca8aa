"""R30x/AS608 sensors: the driver and the simulator talk EF01 packets over a real pty."""

from __future__ import annotations

import asyncio

import pytest

from drivers.fingerprint import FingerprintDriver, SensorError
from drivers.protocols.r30x import Instr
from drivers.sim.r30x import R30xSim
from edge.config.supervision_devices import FingerprintSensorConfig
from tests.conftest import db_of
from tests.supervision_fixtures import check_schema, journal
from tests.waiting import until


def cfg(**kw) -> FingerprintSensorConfig:
    base = {"id": "fp-w1", "port": "/dev/null", "window": 1, "reply_timeout_ms": 500,
            "finger_wait_ms": 3000}
    return FingerprintSensorConfig(**{**base, **kw})




async def rig(rt, tmp_path, **kw) -> tuple[R30xSim, FingerprintDriver]:
    sim = R30xSim(tmp_path / "fp-w1", **kw)
    await sim.start()
    drv = FingerprintDriver(rt, cfg(), endpoint=sim.endpoint, probe_interval=0.2)
    await drv.start()
    await asyncio.wait_for(drv.ready.wait(), 10)
    return sim, drv


def test_enrol_then_identify(runtime, tmp_path):
    rt = runtime

    async def scenario() -> tuple[int, dict, dict, list[int]]:
        sim, drv = await rig(rt, tmp_path)
        try:
            async def finger_twice() -> None:
                await until(lambda: sim.commands.count(Instr.GEN_IMG) >= 1)
                sim.place_finger("S001-right-index")
                await until(lambda: Instr.IMG2TZ in sim.commands)
                n = len(sim.commands)
                sim.lift_finger()  # the sensor must see the glass empty before the 2nd image
                await until(lambda: Instr.GEN_IMG in sim.commands[n:])
                sim.place_finger("S001-right-index")

            helper = asyncio.create_task(finger_twice())
            page = await drv.enrol("S001")
            await helper
            sim.lift_finger()
            sim.place_finger("S001-right-index")
            who = await drv.identify()
            sim.place_finger("stranger")
            nobody = await drv.identify()
            return page, who, nobody, list(sim.templates)
        finally:
            await drv.stop()
            await sim.stop()

    page, who, nobody, stored = asyncio.run(scenario())
    assert page == 0 and stored == [0]
    assert who["matched"] and who["staff"] == "S001" and who["page"] == 0
    assert not nobody["matched"] and nobody["staff"] is None
    [enrolled] = journal(rt, "fingerprint.enrolled")
    assert enrolled["data"] == {"sensor": "fp-w1", "window": 1, "staff": "S001", "page": 0}
    for e in journal(rt, "fingerprint.enrolled", "fingerprint.identified"):
        check_schema(e)
    rows = db_of(rt).execute("SELECT sensor, page, staff FROM fingerprint_templates").fetchall()
    assert rows == [("fp-w1", 0, "S001")]


def test_enrol_with_two_different_fingers_is_refused(runtime, tmp_path):
    rt = runtime

    async def scenario() -> SensorError:
        sim, drv = await rig(rt, tmp_path)
        try:
            sim.place_finger("S002-a")

            async def swap() -> None:
                await until(lambda: Instr.IMG2TZ in sim.commands)
                n = len(sim.commands)
                sim.lift_finger()
                await until(lambda: Instr.GEN_IMG in sim.commands[n:])
                sim.place_finger("S002-b")

            helper = asyncio.create_task(swap())
            with pytest.raises(SensorError) as e:
                await drv.enrol("S002")
            await helper
            return e.value
        finally:
            await drv.stop()
            await sim.stop()

    err = asyncio.run(scenario())
    assert err.code == "sensor-refused" and "not the same finger" in err.detail
    assert journal(rt, "fingerprint.enrolled") == []


def test_silent_sensor_times_out_cleanly(runtime, tmp_path):
    rt = runtime

    async def scenario() -> tuple[SensorError, SensorError]:
        sim, drv = await rig(rt, tmp_path)
        try:
            sim.silent = True
            sim.place_finger("S001-x")
            with pytest.raises(SensorError) as e1:
                await asyncio.wait_for(drv.identify(), 5)  # the driver's own timeout ends it
            with pytest.raises(SensorError) as e2:
                await asyncio.wait_for(drv.enrol("S001"), 5)
            sim.silent = False
            await asyncio.wait_for(drv.ready.wait(), 10)  # answers again: back online
            return e1.value, e2.value
        finally:
            await drv.stop()
            await sim.stop()

    e1, e2 = asyncio.run(scenario())
    assert e1.code == e2.code == "sensor-timeout" and "500 ms" in e1.detail
    health = [(e["data"]["online"], e["data"]["detail"]) for e in journal(rt, "device.health")]
    assert (False, "no answer within 500 ms") in health
    assert health[-1][0] is True


def test_nobody_places_a_finger(runtime, tmp_path):
    rt = runtime

    async def scenario() -> SensorError:
        sim, drv = await rig(rt, tmp_path)
        drv.finger_wait = 0.3
        try:
            with pytest.raises(SensorError) as e:
                await asyncio.wait_for(drv.identify(), 5)
            return e.value
        finally:
            await drv.stop()
            await sim.stop()

    assert asyncio.run(scenario()).code == "finger-timeout"


def test_unplug_replug_20_cycles(runtime, tmp_path):
    rt = runtime

    async def scenario() -> None:
        sim, drv = await rig(rt, tmp_path, templates={7: "S003-thumb"})
        db_of(rt).execute("INSERT INTO fingerprint_templates VALUES ('fp-w1', 7, 'S003', '')")
        try:
            for _ in range(20):
                sim.unplug()
                await until(lambda: not drv.link.online)
                with pytest.raises(SensorError) as e:
                    await drv.identify()
                assert e.value.code == "sensor-offline"
                sim.plug()
                await asyncio.wait_for(drv.ready.wait(), 10)  # recovers within 10 s
            sim.place_finger("S003-thumb")
            who = await drv.identify()
            assert who["staff"] == "S003"
        finally:
            await drv.stop()
            await sim.stop()

    asyncio.run(scenario())
    health = [e["data"]["online"] for e in journal(rt, "device.health")]
    assert health.count(False) >= 20 and health[-1] is True
