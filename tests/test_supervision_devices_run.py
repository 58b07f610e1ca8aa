"""`hallbox run --sim` wiring of the supervision devices: simulators up, drivers on them, API on
top."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from drivers import calling_devices, supervision_devices, video
from drivers.supervision_devices import build
from edge.assembly import BoxContext, HallServices, installed_plugins
from edge.config import ConfigError, parse_config
from edge.ratings import RatingService
from tests.supervision_fixtures import EXAMPLE_CONFIG, ServedBox, journal
from tests.waiting import until


def test_hallbox_run_finds_the_device_plugins_through_the_package():
    assert installed_plugins() == [calling_devices.build, supervision_devices.build, video.build]


def context(rt, tmp_path) -> BoxContext:
    return BoxContext(rt, HallServices(ratings=RatingService(rt, rt.config.rating)), tmp_path,
                      sim=True)


def test_simulated_hall_runs_attendance_fingerprints_and_evaluators(runtime, tmp_path):
    rt = runtime
    ctx = context(rt, tmp_path)
    comps = build(ctx)

    async def scenario() -> None:
        for c in comps:
            await c.start()
        try:
            att = next(c for c in comps if c.name == "attendance-zk-entrance")
            await asyncio.wait_for(att.driver.synced.wait(), 10)
            rt.execute(lambda h: (None, h.login("S001", 1)))  # also a punch at the sim terminal
            await until(lambda: len(journal(rt, "punch.recorded")) == 1)
            fp = next(c for c in comps if c.name == "sim-fp-w1").sim
            drv = next(c for c in comps if c.name == "fingerprint-fp-w1")
            await asyncio.wait_for(drv.ready.wait(), 10)
            async with ServedBox(rt, ctx.services) as box, \
                    httpx.AsyncClient(base_url=box.base) as http:
                mgr = {"Authorization": "Bearer demo-manager-token"}
                fp.place_finger("visitor")
                r = await http.post("/api/v1/fingerprints/fp-w1/identify", json={},
                                    headers=mgr)
                assert r.status_code == 200 and r.json()["matched"] is False
                fp.silent = True
                drv.reply_timeout = 0.3
                r = await http.post("/api/v1/fingerprints/fp-w1/identify", json={},
                                    headers=mgr)
                assert r.status_code == 504
                assert r.json()["type"] == "urn:hallbox:problem:sensor-timeout"
                r = await http.post("/api/v1/fingerprints/nope/identify", json={},
                                    headers=mgr)
                assert r.status_code == 404
        finally:
            for c in reversed(comps):
                await c.stop()

    asyncio.run(scenario())
    classes = sorted({d["class"] for d in ctx.sim_devices})
    assert classes == ["attendance", "evaluator", "fingerprint"]
    [p] = journal(rt, "punch.recorded")
    assert p["data"]["staff"] == "S001" and p["data"]["name"] == "王芳"
    assert p["data"]["user_id"] == "1001" and p["data"]["kind"] == "check_in"


def _raw() -> dict:
    import tomllib

    return tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("change", "path"), [
    (lambda d: d["devices"]["evaluators"][0].update(window=99), "devices.evaluators[0].window"),
    (lambda d: d["devices"]["evaluators"][12].update(bus="nope"), "devices.evaluators[12].bus"),
    (lambda d: d["devices"]["evaluators"][1].update(window=1), "devices.evaluators[1].window"),
    (lambda d: d["devices"].setdefault("keypads", []).append(
        {"id": "kp-1", "bus": "rs485-eval", "address": 1, "window": 1}),
     "devices.evaluators[12].bus"),
    (lambda d: d["devices"]["evaluators"][0].update(bus="rs485-eval"),
     "devices.evaluators[0]"),
    (lambda d: d["devices"]["attendance"][0]["users"].update({"9": "S999"}),
     "devices.attendance[0].users.9"),
    (lambda d: d["devices"]["attendance"][0].update(comm_key=1234),
     "devices.attendance[0].comm_key"),
    (lambda d: d["devices"]["fingerprints"][1].update(port=d["devices"]["fingerprints"][0]
                                                      ["port"]), "devices.fingerprints[1].port"),
    (lambda d: d["devices"]["fingerprints"][0].update(port="tcp://127.0.0.1:9"),
     "devices.fingerprints[0].port"),
])
def test_config_errors_name_their_key(change, path):
    raw = _raw()
    change(raw)
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert any(i.path == path for i in e.value.issues), [str(i) for i in e.value.issues]


def test_fingerprint_enrol_and_login_at_a_window_and_attendance_query(runtime, tmp_path):
    from drivers.protocols.r30x import Instr

    rt = runtime
    ctx = context(rt, tmp_path)
    comps = build(ctx)

    async def scenario() -> None:
        for c in comps:
            await c.start()
        try:
            fp = next(c for c in comps if c.name == "sim-fp-w8").sim
            drv = next(c for c in comps if c.name == "fingerprint-fp-w8")
            att = next(c for c in comps if c.name == "attendance-zk-entrance")
            await asyncio.wait_for(drv.ready.wait(), 10)
            await asyncio.wait_for(att.driver.synced.wait(), 10)

            async def finger_twice() -> None:
                await until(lambda: Instr.GEN_IMG in fp.commands)
                fp.place_finger("S008-index")
                await until(lambda: Instr.IMG2TZ in fp.commands)
                n = len(fp.commands)
                fp.lift_finger()
                await until(lambda: Instr.GEN_IMG in fp.commands[n:])
                fp.place_finger("S008-index")

            async with ServedBox(rt, ctx.services) as box, \
                    httpx.AsyncClient(base_url=box.base) as http:
                mgr = {"Authorization": "Bearer demo-manager-token"}
                helper = asyncio.create_task(finger_twice())
                r = await http.post("/api/v1/fingerprints/fp-w8/enrol",
                                    json={"staff_id": "S008"}, headers=mgr)
                await helper
                assert r.status_code == 201 and r.json()["staff"] == "S008"
                # Only the window's own paired console starts a fingerprint login.
                assert (await http.post("/api/v1/windows/8/fingerprint-login")
                        ).status_code == 401
                consoles = {}
                for w in (8, 3):
                    r = await http.post("/api/v1/devices", headers=mgr, json={
                        "name": f"console-w{w}", "kind": "console", "window": w})
                    assert r.status_code == 201, r.text
                    consoles[w] = {"Authorization": f"Bearer {r.json()['token']}"}
                r = await http.post("/api/v1/windows/8/fingerprint-login", headers=consoles[3])
                assert r.status_code == 403
                r = await http.post("/api/v1/windows/8/fingerprint-login", headers=consoles[8])
                assert r.status_code == 201 and r.json()["staff_id"] == "S008"
                who = await http.get("/api/v1/whoami", headers={
                    "Authorization": f"Bearer {r.json()['token']}"})
                assert who.json() == {"role": "staff", "name": "S008", "window": 8}
                fp.place_finger("someone-else")
                r = await http.post("/api/v1/windows/8/fingerprint-login", headers=consoles[8])
                assert r.status_code == 401
                r = await http.post("/api/v1/windows/3/fingerprint-login", headers=consoles[3])
                assert r.status_code == 404
                await until(lambda: len(journal(rt, "punch.recorded")) == 1)  # login = punch
                r = await http.get("/api/v1/attendance", headers=mgr)
                assert [p["staff"] for p in r.json()["punches"]] == ["S008"]
                assert r.json()["punches"][0]["name"] == "黄强"
                r = await http.get("/api/v1/attendance", params={"day": "bad"}, headers=mgr)
                assert r.status_code == 422
        finally:
            for c in reversed(comps):
                await c.stop()

    asyncio.run(scenario())
    ident = [e["data"] for e in journal(rt, "fingerprint.identified")]
    assert [(i["purpose"], i["matched"]) for i in ident] == [("login", True), ("login", False)]


def test_fingerprint_login_holds_no_sensor_it_should_not(runtime, tmp_path):
    """Anonymous callers cannot start a login; a login never queues behind a busy sensor; a
    spot check pre-empts a pending login (whose finger it then does not read); a console that
    gives up releases the sensor at once."""
    from drivers.protocols.r30x import Instr

    rt = runtime
    ctx = context(rt, tmp_path)
    comps = build(ctx)

    async def scenario() -> None:
        for c in comps:
            await c.start()
        try:
            fp = next(c for c in comps if c.name == "sim-fp-w8").sim
            drv = next(c for c in comps if c.name == "fingerprint-fp-w8")
            await asyncio.wait_for(drv.ready.wait(), 10)
            async with ServedBox(rt, ctx.services) as box, \
                    httpx.AsyncClient(base_url=box.base, timeout=30) as http:
                mgr = {"Authorization": "Bearer demo-manager-token"}
                assert (await http.post("/api/v1/windows/8/fingerprint-login")
                        ).status_code == 401
                r = await http.post("/api/v1/devices", headers=mgr, json={
                    "name": "console-w8", "kind": "console", "window": 8})
                console = {"Authorization": f"Bearer {r.json()['token']}"}
                url = "/api/v1/windows/8/fingerprint-login"
                # nobody places a finger: the login waits at the sensor ...
                pending = asyncio.create_task(http.post(url, headers=console))
                await until(lambda: drv._busy == "login")
                r = await http.post(url, headers=console)  # ... and a second one does not queue
                assert r.status_code == 409 and r.json()["type"].endswith(":sensor-busy")
                # a spot check pre-empts it; the finger placed for the check is the check's
                n = len(fp.commands)
                check = asyncio.create_task(http.post(
                    "/api/v1/fingerprints/fp-w8/identify", headers=mgr,
                    json={"purpose": "spot_check"}))
                r = await pending
                assert r.status_code == 409 and r.json()["type"].endswith(":sensor-preempted")
                await until(lambda: drv._busy == "spot_check"
                            and Instr.GEN_IMG in fp.commands[n:])
                fp.place_finger("S008-index")
                r = await check
                assert r.status_code == 200 and r.json()["purpose"] == "spot_check"
                purposes = [e["data"]["purpose"] for e in journal(rt, "fingerprint.identified")]
                assert purposes == ["spot_check"]
                fp.lift_finger()
                # a console that gives up: the sensor is free at once, not after finger_wait
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(url, headers=console, timeout=0.3)
                await until(lambda: drv._busy is None, timeout=2)
        finally:
            for c in reversed(comps):
                await c.stop()

    asyncio.run(scenario())
