"""Spot checks (随机抽查) against a real R30x sensor simulator on a pty: passed, failed, timed
out, not on duty; the central command's reply is the result."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from drivers.fingerprint import FingerprintDriver
from drivers.protocols.r30x import Instr
from drivers.sim.r30x import R30xSim
from edge.assembly import HallServices
from edge.config import parse_config
from edge.domain import spotcheck
from edge.domain.errors import DomainError
from edge.link import protocol as P
from edge.link.commands import CommandRouter
from edge.runtime import HallRuntime
from edge.supervision import Supervision
from tests.floor_supervision_fixtures import at, check_schemas, journal, raw_config, services_for
from tests.waiting import until

KEY = "spotcheck-test-command-key"


async def enrolled(rt: HallRuntime, services: HallServices,
                   tmp_path) -> tuple[R30xSim, FingerprintDriver]:
    cfg = next(f for f in rt.config.devices.fingerprints if f.window == 1)  # type: ignore[union-attr]
    cfg = cfg.model_copy(update={"reply_timeout_ms": 500, "finger_wait_ms": 1000})
    sim = R30xSim(tmp_path / "fp-w1")
    await sim.start()
    drv = FingerprintDriver(rt, cfg, endpoint=sim.endpoint, probe_interval=0.2)
    services.sensors[cfg.id] = drv  # as the staff-devices plugin registers it
    await drv.start()
    await asyncio.wait_for(drv.ready.wait(), 10)

    async def finger_twice() -> None:
        await until(lambda: sim.commands.count(Instr.GEN_IMG) >= 1)
        sim.place_finger("S001-right-index")
        await until(lambda: Instr.IMG2TZ in sim.commands)
        n = len(sim.commands)
        sim.lift_finger()
        await until(lambda: Instr.GEN_IMG in sim.commands[n:])
        sim.place_finger("S001-right-index")

    helper = asyncio.create_task(finger_twice())
    await drv.enrol("S001")
    await helper
    sim.lift_finger()
    return sim, drv


def test_spot_checks_on_a_real_sensor(tmp_path) -> None:
    cfg = parse_config(raw_config(mqtt={"url": "mqtt://127.0.0.1:1", "command_key": KEY}))
    from edge.clock import FakeClock

    clock = FakeClock(at(23, 9, 0))
    rt = HallRuntime.open(cfg, tmp_path / "data", clock=clock)
    rt.tick()
    services = services_for(rt)
    svc = services.supervision
    assert svc is not None
    rt.execute(lambda h: (None, h.login("S001", 1)))

    async def finger_when_asked(sim: R30xSim, finger: str | None) -> None:
        n = sim.commands.count(Instr.SEARCH)
        g = sim.commands.count(Instr.GEN_IMG)
        await until(lambda: sim.commands.count(Instr.GEN_IMG) > g)  # the sensor is prompting
        if finger is not None:
            sim.place_finger(finger)
            await until(lambda: sim.commands.count(Instr.SEARCH) > n)
            sim.lift_finger()

    async def check(sim: R30xSim, finger: str | None, seconds: float, **kw) -> dict:
        helper = asyncio.create_task(finger_when_asked(sim, finger))
        out = await svc.spot_check(deadline=clock.now() + timedelta(seconds=seconds), **kw)
        await helper
        return out

    async def command(name: str, args: dict) -> dict:
        router = CommandRouter(rt, cfg.mqtt, None, services.commands,  # type: ignore[arg-type]
                               services)
        payload = json.dumps(P.make_command(KEY, cfg.hall.site, cfg.hall.box, name, args,
                                            now=clock.now()))  # the box's (injected) clock
        return await router.handle(name, payload.encode())

    async def scenario() -> tuple[dict, dict, dict, dict, dict]:
        sim, drv = await enrolled(rt, services, tmp_path)
        try:
            passed = await check(sim, "S001-right-index", 10, window=1, staff=None)
            failed = await check(sim, "someone-else", 10, window=None, staff="S001")
            timeout = await check(sim, None, 1.5, window=1, staff=None)
            helper = asyncio.create_task(finger_when_asked(sim, "S001-right-index"))
            reply = await command("spotcheck.start", {
                "staff": "S001", "deadline": (clock.now() + timedelta(seconds=10)).isoformat(),
                "note": "随机抽查"})
            await helper
            off_duty = await command("spotcheck.start", {"staff": "S002"})
            return passed, failed, timeout, reply, off_duty
        finally:
            await drv.stop()
            await sim.stop()

    passed, failed, timeout, reply, off_duty = asyncio.run(scenario())
    assert (passed["result"], passed["staff"], passed["identified"]) == ("passed", "S001", "S001")
    assert (failed["result"], failed["window"], failed["identified"]) == ("failed", 1, None)
    assert timeout["result"] == "timeout"
    assert reply["ok"] and reply["result"]["result"] == "passed", reply
    assert off_duty["ok"] and off_duty["result"]["result"] == "not_on_duty"
    results = [e["data"]["result"] for e in journal(rt, "spotcheck.result")]
    assert results == ["passed", "failed", "timeout", "passed", "not_on_duty"]
    started = journal(rt, "spotcheck.started")
    assert len(started) == 5 and started[3]["data"]["command_id"] == reply["id"]
    assert started[0]["data"]["sensor"] == "fp-w1"
    # A passed check is also a fingerprint at the window: presence for attendance.
    purposes = [e["data"]["purpose"] for e in journal(rt, "fingerprint.identified")]
    assert purposes.count("spot_check") == 3
    check_schemas(rt)
    rt.close()


def test_refusals_change_nothing(hall) -> None:
    """The pure state machine: every refusal before anything is recorded."""
    clock = hall.clock
    checks = spotcheck.SpotChecks(clock, {1: "fp-w1", 8: "fp-w8"})
    soon = clock.now() + timedelta(minutes=2)
    cases = [
        (dict(window=None, staff=None, deadline=soon), "nothing-to-check", "window"),
        (dict(window=None, staff="S999", deadline=soon), "unknown-staff", "staff"),
        (dict(window=99, staff=None, deadline=soon), "unknown-window", "window"),
        (dict(window=2, staff=None, deadline=soon), "no-sensor", "window"),
        (dict(window=1, staff=None, deadline=clock.now()), "deadline-passed", "deadline"),
        (dict(window=1, staff=None, deadline=clock.now() + timedelta(hours=2)),
         "deadline-too-far", "deadline"),
    ]
    for kw, code, pointer in cases:
        try:
            checks.start(hall, "c1", **kw)
        except DomainError as e:
            assert (e.code, e.subject) == (code, pointer)
        else:
            raise AssertionError(f"{kw} was not refused")
    assert checks.checks == {}
    hall.login("S001", 1)
    c, events = checks.start(hall, "c1", window=None, staff="S001", deadline=soon)
    assert c.window == 1 and [e.type for e in events] == ["spotcheck.started"]
    try:
        checks.start(hall, "c2", window=1, staff=None, deadline=soon)
    except DomainError as e:
        assert e.code == "check-running"
    assert checks.identified(hall, "c1", "S002")[0].data["result"] == "failed"
    assert checks.identified(hall, "c1", "S001") == []  # ended exactly once
    c, events = checks.start(hall, "c3", window=8, staff=None, deadline=soon)
    assert [e.data.get("result") for e in events] == [None, "not_on_duty"]
    c, events = checks.start(hall, "c4", window=1, staff=None, deadline=soon)
    clock.advance(minutes=3)
    assert checks.sweep(hall)[0].data["result"] == "timeout"


def test_a_check_running_through_a_restart_ends_once(tmp_path) -> None:
    from edge.clock import FakeClock

    cfg = parse_config(raw_config())
    clock = FakeClock(at(23, 9, 0))
    rt = HallRuntime.open(cfg, tmp_path / "data", clock=clock)
    rt.tick()
    rt.execute(lambda h: (None, h.login("S001", 1)))
    svc = Supervision(rt, HallServices())
    _, events = svc.spot.start(rt.hall, "SC-r", window=1, staff=None,
                               deadline=clock.now() + timedelta(minutes=2))
    rt.emit(events)
    rt.close()  # the box stops before the check ends
    rt = HallRuntime.open(cfg, tmp_path / "data", clock=clock)
    again = Supervision(rt, HallServices())
    assert [c.id for c in again.spot.running()] == ["SC-r"]
    again.tick()
    assert journal(rt, "spotcheck.result") == []
    clock.advance(minutes=3)
    again.tick()
    again.tick()
    [r] = journal(rt, "spotcheck.result")
    assert r["data"]["check"] == "SC-r" and r["data"]["result"] == "timeout"
    rt.close()


def test_the_assembled_box_checks_through_its_own_sensor(tmp_path) -> None:
    """`build_box` with the supervision devices plugin and --sim: the service, its loop and
    commands are there, and a spot check over HTTP reads the simulated window sensor."""
    import httpx

    from drivers import supervision_devices, video
    from edge.assembly import build_box
    from edge.clock import FakeClock

    cfg = parse_config(raw_config())
    clock = FakeClock(at(23, 9, 0))

    async def main() -> dict:
        # With the camera plugin: the result names the window camera's snapshot.
        box = build_box(cfg, tmp_path / "box", plugins=[supervision_devices.build, video.build],
                        sim=True, clock=clock)
        await box.start()
        try:
            assert box.services.supervision is not None
            assert {"spotcheck.start", "attendance.summary", "stats.get"} <= set(
                box.services.commands)
            assert "supervision" in [c.name for c in box.components]
            drv = box.services.sensors["fp-w1"]
            sim = next(s for s in box.sims
                       if isinstance(s, R30xSim) and str(s.endpoint).endswith("fp-w1"))
            await asyncio.wait_for(drv.ready.wait(), 10)  # type: ignore[attr-defined]

            async def finger_twice() -> None:
                await until(lambda: sim.commands.count(Instr.GEN_IMG) >= 1)
                sim.place_finger("S001-right-index")
                await until(lambda: Instr.IMG2TZ in sim.commands)
                n = len(sim.commands)
                sim.lift_finger()
                await until(lambda: Instr.GEN_IMG in sim.commands[n:])
                sim.place_finger("S001-right-index")

            helper = asyncio.create_task(finger_twice())
            await drv.enrol("S001")
            await helper
            sim.lift_finger()
            await box.runtime.run(lambda h: (None, h.login("S001", 1)))

            async def finger_when_asked() -> None:
                g = sim.commands.count(Instr.GEN_IMG)
                await until(lambda: sim.commands.count(Instr.GEN_IMG) > g)
                sim.place_finger("S001-right-index")

            helper = asyncio.create_task(finger_when_asked())
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=box.app),
                                         base_url="http://127.0.0.1") as c:
                r = await c.post("/api/v1/spotchecks", headers={
                    "authorization": "Bearer demo-manager-token"}, json={
                    "window": 1, "deadline": (clock.now() + timedelta(seconds=20)).isoformat()})
            await helper
            assert r.status_code == 200, r.text
            out = r.json()
            ref = out["snapshot"]
            assert ref and ref.endswith(f"-{out['check']}.jpg") and "cam-w1" in ref
            jpeg = box.services.video.folder / ref
            await until(jpeg.exists, timeout=20)
            assert jpeg.read_bytes()[:2] == b"\xff\xd8"  # a JPEG from the simulated camera
            [ev] = [e for e in box.runtime.store.events_after(0, 10_000, ["spotcheck.result"])]
            assert ev["data"]["snapshot"] == ref
            return out
        finally:
            await box.stop()
            box.close()

    out = asyncio.run(main())
    assert (out["result"], out["staff"], out["identified"], out["sensor"]) == (
        "passed", "S001", "S001", "fp-w1")
