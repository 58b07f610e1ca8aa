"""Tablet evaluators through the real WebSocket protocol on a real uvicorn server."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.supervision_fixtures import ServedBox, check_schema, journal, serve_ticket


async def recv(ws, kind: str | None = None, timeout: float = 10.0) -> dict:
    """The next frame (of a kind, skipping pushes of other kinds)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if kind is None or frame["type"] == kind:
            return frame


async def login(ws, window: int, token: str | None = None) -> dict:
    await ws.send(json.dumps({"type": "login", "window": window,
                              "token": token or f"demo-evaluator-{window}"}))
    return await recv(ws)


def test_tablet_rating_binds_to_ticket_and_staff(services, runtime):
    rt = runtime

    async def scenario() -> None:
        async with ServedBox(rt, services) as box, \
                websockets.connect(f"{box.ws}/ws/evaluator") as ws:
            welcome = await login(ws, 1)
            assert welcome["type"] == "welcome" and welcome["device"] == "eval-w1"
            assert welcome["staff"] is None and welcome["pending"] is None
            assert [lv["name"] for lv in welcome["levels"]] == [
                "非常满意", "满意", "基本满意", "不满意", "非常不满意"]
            tid = serve_ticket(rt, 1, "S001")
            staff = await recv(ws, "staff")
            assert staff["staff"]["name"] == "王芳" and staff["staff"]["id"] == "S001"
            rate = await recv(ws, "rate")
            assert rate["ticket"] == tid and rate["staff"]["id"] == "S001"
            await ws.send(json.dumps({"type": "staff"}))
            card = await recv(ws, "staff")
            assert card["staff"]["department"] == "区民政局"
            await ws.send(json.dumps({"type": "submit", "ticket": tid, "level": "不满意"}))
            err = await recv(ws)
            assert err == {"type": "error", "code": "reason-required",
                           "detail": err["detail"]}
            await ws.send(json.dumps({"type": "submit", "ticket": tid,
                                      "level": "dissatisfied", "reason": "等候时间长"}))
            ok = await recv(ws, "accepted")
            assert ok["ticket"] == tid and ok["level_name"] == "不满意"
            idle = await recv(ws, "idle")
            assert idle["ticket"] == tid
            async with httpx.AsyncClient(base_url=box.base) as http:
                r = await http.get("/api/v1/ratings/summary",
                                   headers={"Authorization": "Bearer demo-manager-token"})
                assert r.status_code == 200
                s = r.json()
                assert s["windows"]["1"]["ratings"]["dissatisfied"] == 1
                assert s["staff"]["S001"]["requested"] == 1

    asyncio.run(scenario())
    [ev] = journal(rt, "rating.submitted")
    assert ev["data"]["ticket"] and ev["data"]["staff"] == "S001"
    assert ev["data"]["channel"] == "tablet" and ev["data"]["device"] == "eval-w1"
    assert ev["data"]["reason"] == "等候时间长"
    check_schema(ev)


@pytest.mark.parametrize("rule", ["no-request", "wrong-window", "already-rated", "too-late",
                                  "staff-not-logged-in"])
def test_broken_rules_over_ws_are_refused_and_counted(services, runtime, clock, rule):
    rt = runtime

    async def scenario() -> dict:
        async with ServedBox(rt, services) as box:
            async with websockets.connect(f"{box.ws}/ws/evaluator") as w1, \
                    websockets.connect(f"{box.ws}/ws/evaluator") as w2:
                await login(w1, 1)
                await login(w2, 2)
                rt.execute(lambda h: (None, h.login("S002", 2)))
                tid = None
                sock = w1
                if rule == "no-request":
                    sock = w2
                else:
                    tid = serve_ticket(rt, 1, "S001")
                    await recv(w1, "rate")
                if rule == "wrong-window":
                    sock = w2
                elif rule == "already-rated":
                    await w1.send(json.dumps({"type": "submit", "ticket": tid,
                                              "level": "satisfied"}))
                    await recv(w1, "accepted")
                elif rule == "too-late":
                    clock.advance(rt.config.rating.window_seconds + 5)
                elif rule == "staff-not-logged-in":
                    rt.execute(lambda h: (None, h.logout(1)))
                msg = {"type": "submit", "level": "very_satisfied"}
                if tid:
                    msg["ticket"] = tid
                await sock.send(json.dumps(msg))
                return await recv(sock, "rejected")

    rejected = asyncio.run(scenario())
    assert rejected["rule"] == rule
    [ev] = journal(rt, "rating.rejected")
    assert ev["data"]["rule"] == rule and ev["data"]["channel"] == "tablet"
    check_schema(ev)
    ratings = journal(rt, "rating.submitted")
    assert len(ratings) == (1 if rule == "already-rated" else 0)


def test_unrated_ticket_ends_unrated_and_tablet_goes_idle(services, runtime, clock):
    rt = runtime
    async def scenario() -> dict:
        async with ServedBox(rt, services) as box, \
                websockets.connect(f"{box.ws}/ws/evaluator") as ws:
            await login(ws, 3)
            tid = serve_ticket(rt, 3, "S003")
            await recv(ws, "rate")
            clock.advance(rt.config.rating.window_seconds + 1)
            await services.ratings.sweep()
            idle = await recv(ws, "idle")
            assert idle["ticket"] == tid
            return idle

    idle = asyncio.run(scenario())
    assert idle["result"] == "未评价"
    [miss] = journal(rt, "rating.missing")
    assert miss["data"]["result"] == "未评价"
    assert journal(rt, "rating.submitted") == []


def test_every_bad_message_gets_a_clear_error(services, runtime):
    rt = runtime

    async def scenario() -> list[dict]:
        out = []
        async with ServedBox(rt, services) as box, \
                websockets.connect(f"{box.ws}/ws/evaluator") as ws:
            for raw in ['{"type": "submit", "level": "satisfied"}',  # before login
                        "not json", "[1, 2]", '{"no": "type"}', '{"type": "dance"}',
                        '{"type": "login", "window": 1}',
                        '{"type": "login", "window": "1", "token": "x"}',
                        "x" * 5000]:
                await ws.send(raw)
                out.append(await recv(ws))
            await ws.send(b"\x00\x01")
            out.append(await recv(ws))
            assert (await login(ws, 4))["type"] == "welcome"
            for raw in ['{"type": "submit"}', '{"type": "submit", "level": "great"}',
                        '{"type": "submit", "level": "satisfied", "reason": 5}',
                        '{"type": "login", "window": 4, "token": "demo-evaluator-4"}']:
                await ws.send(raw)
                out.append(await recv(ws))
            await ws.send('{"type": "ping"}')
            assert (await recv(ws))["type"] == "pong"
        return out

    frames = asyncio.run(scenario())
    codes = [f["code"] for f in frames]
    assert all(f["type"] == "error" and f["detail"] for f in frames)
    assert codes == ["login-required", "not-json", "bad-message", "bad-message",
                     "unknown-type", "missing-field", "bad-field", "too-large",
                     "binary-frame", "missing-field", "unknown-level", "bad-field",
                     "already-logged-in"]
    assert journal(rt, "rating.submitted", "rating.rejected") == []


def test_wrong_token_and_brute_force_closes(services, runtime):
    rt = runtime

    async def scenario() -> tuple[list[str], int | None]:
        async with ServedBox(rt, services) as box, \
                websockets.connect(f"{box.ws}/ws/evaluator") as ws:
            codes = [(await login(ws, 2, "demo-evaluator-1"))["code"]]
            codes.append((await login(ws, 2, "guess"))["code"])
            codes.append((await login(ws, 2, "guess2"))["code"])
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 5)
            return codes, e.value.rcvd.code if e.value.rcvd else None

    codes, close = asyncio.run(scenario())
    assert codes == ["wrong-window", "bad-token", "bad-token"]
    assert close == 4401


def test_staff_page_requests_a_rating_when_auto_request_is_off(hall_config, clock, tmp_path):
    from edge.config import RatingSection
    from edge.runtime import HallRuntime

    cfg = hall_config.model_copy(update={"rating": RatingSection(auto_request=False)})
    from edge.assembly import HallServices
    from edge.ratings import RatingService

    rt = HallRuntime.open(cfg, tmp_path / "d", clock=clock)
    rt.tick()
    services = HallServices(ratings=RatingService(rt, cfg.rating))

    async def scenario() -> None:
        async with ServedBox(rt, services) as box, httpx.AsyncClient(base_url=box.base) as http, \
                websockets.connect(f"{box.ws}/ws/evaluator") as ws:
            await login(ws, 5)
            r = await http.post("/api/v1/sessions", json={"staff_id": "S005", "pin": "8005",
                                                          "window": 5})
            auth = {"Authorization": f"Bearer {r.json()['token']}"}
            tid = serve_ticket(rt, 5, "S005")
            assert journal(rt, "rating.requested") == []  # nothing asked by itself
            r = await http.post("/api/v1/windows/6/rating-request", json={}, headers=auth)
            assert r.status_code == 403
            r = await http.post("/api/v1/windows/5/rating-request", json={"ticket": "C999"},
                                headers=auth)
            assert r.status_code == 404
            r = await http.post("/api/v1/windows/5/rating-request", json={}, headers=auth)
            assert r.status_code == 201 and r.json()["ticket"] == tid
            assert (await recv(ws, "rate"))["ticket"] == tid
            r = await http.post("/api/v1/windows/5/rating-request", json={}, headers=auth)
            assert r.status_code == 409
            assert r.json()["type"] == "urn:hallbox:problem:already-requested"
            await ws.send(json.dumps({"type": "submit", "ticket": tid, "level": "满意"}))
            assert (await recv(ws, "accepted"))["level"] == "satisfied"

    try:
        asyncio.run(scenario())
    finally:
        rt.close()


def test_random_messages_get_frames_never_crash(services, runtime):
    """Fuzz the tablet protocol: any text gets one well-formed answer; the session lives on."""
    import threading

    from hypothesis import given, settings
    from hypothesis import strategies as st
    from websockets.sync.client import connect

    rt = runtime
    ready, stop = threading.Event(), threading.Event()
    where: dict[str, str] = {}

    def serve() -> None:
        async def main() -> None:
            async with ServedBox(rt, services) as box:
                where["ws"] = box.ws
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(main())

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    assert ready.wait(20)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
            st.sampled_from(["type", "window", "token", "level", "ticket", "reason", "x"]),
            kids, max_size=5), max_leaves=12)
    messages = st.one_of(
        st.text(max_size=200),
        json_values.map(json.dumps),
        st.fixed_dictionaries({"type": st.sampled_from(["submit", "login", "staff", "ping"])},
                              optional={"level": st.text(max_size=12) | st.integers(),
                                        "ticket": st.text(max_size=30) | st.none(),
                                        "reason": st.text(max_size=300) | st.integers(),
                                        "window": st.integers() | st.text(max_size=3),
                                        "token": st.text(max_size=20)}).map(json.dumps))
    try:
        with connect(f"{where['ws']}/ws/evaluator") as ws:
            ws.send(json.dumps({"type": "login", "window": 6, "token": "demo-evaluator-6"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"

            @settings(max_examples=200, deadline=None)
            @given(messages)
            def exchange(msg: str) -> None:
                ws.send(msg)
                frame = json.loads(ws.recv(timeout=10))
                assert frame["type"] in {"error", "rejected", "accepted", "pong", "staff"}
                if frame["type"] == "error":
                    assert frame["code"] and frame["detail"]

            exchange()
            ws.send('{"type": "ping"}')
            assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
    finally:
        stop.set()
        server.join(20)
    assert journal(rt, "rating.submitted") == []


# The tablet page itself (/evaluator: pairing once, token never in its URL, rating, reasons,
# reconnecting) is driven through Playwright in tests/test_pages.py.


def test_tablet_reconnects_20_times_without_leaks(services, runtime):
    """The tablet's 'unplug': its WebSocket drops; it comes back and still rates."""
    rt = runtime
    subs_before = len(rt.bus._subs)

    async def scenario() -> dict:
        async with ServedBox(rt, services) as box:
            for _ in range(20):
                async with websockets.connect(f"{box.ws}/ws/evaluator") as ws:
                    assert (await login(ws, 7))["type"] == "welcome"
            await until_closed(rt, subs_before)
            tid = serve_ticket(rt, 7, "S007")
            async with websockets.connect(f"{box.ws}/ws/evaluator") as ws:
                welcome = await login(ws, 7)
                assert welcome["pending"]["ticket"] == tid  # a request waiting at reconnect
                await ws.send(json.dumps({"type": "submit", "ticket": tid,
                                          "level": "basically_satisfied"}))
                out = await recv(ws, "accepted")
            await until_closed(rt, subs_before)
            return out

    assert asyncio.run(scenario())["level_name"] == "基本满意"
    health = [(e["data"]["online"], e["data"]["grade"]) for e in journal(rt, "device.health")
              if e["data"]["device"] == "eval-w7"]
    assert health.count((False, "C")) == 21 and health.count((True, None)) == 21
    assert len(rt.bus._subs) == subs_before  # every session unsubscribed


async def until_closed(rt, subs: int, timeout: float = 10.0) -> None:
    """Liveness bound: the server has seen every tablet session close."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while len(rt.bus._subs) != subs:
        assert loop.time() < end, "sessions not closed in time"
        await asyncio.sleep(0.01)
