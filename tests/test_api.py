"""The local API: roles, problem+json refusals that change nothing, the staff flow, streams."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.runtime import HallRuntime
from tests.conftest import EXAMPLE_CONFIG, db_of

MANAGER = {"authorization": "Bearer demo-manager-token"}
CENTRAL = {"authorization": "Bearer demo-central-token"}
KIOSK = {"authorization": "Bearer demo-kiosk-token"}


@pytest.fixture
def client(runtime: HallRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), base_url="http://127.0.0.1") as c:
        yield c


def login(client: TestClient, staff: str = "S001", pin: str = "8001",
          window: int = 1) -> dict[str, str]:
    r = client.post("/api/v1/sessions", json={"staff_id": staff, "pin": pin, "window": window})
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


def assert_problem(r: httpx.Response, status: int, code: str, pointer: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == f"urn:hallbox:problem:{code}"
    assert body["status"] == status and body["detail"] and body["instance"]
    if pointer:
        assert pointer in [e["pointer"] for e in body["errors"]], body


def test_take_ticket_public(client: TestClient) -> None:
    r = client.post("/api/v1/tickets", json={"service": "SHMS"})
    assert r.status_code == 201
    body = r.json()
    assert body["number"] == "A001" and body["service_name"] == "社会民生"
    assert body["state"] == "waiting" and body["ahead"] == 0


@pytest.mark.parametrize("body,pointer", [
    ({}, "/body/service"),
    ({"service": ""}, "/body/service"),
    ({"service": "SHMS", "priority": "vip"}, "/body/priority"),
    ({"service": "SHMS", "colour": "red"}, "/body/colour"),
    ({"service": 12}, "/body/service"),
])
def test_bad_ticket_bodies(client: TestClient, runtime: HallRuntime, body: dict[str, object],
                           pointer: str) -> None:
    head = runtime.store.head_seq
    assert_problem(client.post("/api/v1/tickets", json=body), 422, "validation", pointer)
    assert runtime.store.head_seq == head and runtime.hall.tickets == {}


def test_malformed_json(client: TestClient, runtime: HallRuntime) -> None:
    r = client.post("/api/v1/tickets", content=b'{"service": ',
                    headers={"content-type": "application/json"})
    assert_problem(r, 422, "validation")
    assert runtime.hall.tickets == {}


def test_idempotency_key_gives_the_same_ticket(client: TestClient,
                                               runtime: HallRuntime) -> None:
    key = {"idempotency-key": "kiosk1-7f3a9c2e"}
    first = client.post("/api/v1/tickets", json={"service": "SHMS"}, headers=key)
    head = runtime.store.head_seq
    again = client.post("/api/v1/tickets", json={"service": "SHMS"}, headers=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and runtime.store.head_seq == head
    other = client.post("/api/v1/tickets", json={"service": "SHMS"},
                        headers={"idempotency-key": "kiosk1-00000001"})
    assert other.json()["number"] == "A002"
    assert_problem(client.post("/api/v1/tickets", json={"service": "SHMS"},
                               headers={"idempotency-key": "bad key!"}), 422,
                   "bad-idempotency-key", "/header/Idempotency-Key")
    # a refused issue leaves no key behind: the same key works once the input is right
    k2 = {"idempotency-key": "kiosk1-00000002"}
    assert client.post("/api/v1/tickets", json={"service": "NOPE"}, headers=k2).status_code == 404
    assert client.post("/api/v1/tickets", json={"service": "SW"}, headers=k2).status_code == 201


def test_new_day_ends_staff_sessions(client: TestClient, runtime: HallRuntime) -> None:
    staff = login(client)
    assert client.get("/api/v1/windows/1", headers=staff).status_code == 200
    runtime.clock.advance(hours=24)  # type: ignore[attr-defined]
    client.get("/api/v1/board")
    assert_problem(client.get("/api/v1/windows/1", headers=staff), 401, "unauthorized")
    assert db_of(runtime).execute("SELECT count(*) FROM sessions").fetchone()[0] == 0


def test_unknown_service_is_404_with_pointer(client: TestClient) -> None:
    assert_problem(client.post("/api/v1/tickets", json={"service": "NOPE"}), 404,
                   "unknown-service", "/body/service")


def test_priority_and_desk_tickets_need_a_token(client: TestClient) -> None:
    assert_problem(client.post("/api/v1/tickets", json={"service": "SHMS", "priority": "green"}),
                   401, "unauthorized")
    r = client.post("/api/v1/tickets", json={"service": "SHMS", "priority": "green"},
                    headers=KIOSK)
    assert r.status_code == 201 and r.json()["priority"] == "green"
    assert_problem(client.post("/api/v1/tickets", json={"service": "SHMS", "source": "desk"},
                               headers=KIOSK), 403, "forbidden")


def test_roles_guard_the_journal(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/events"), 401, "unauthorized")
    assert_problem(client.get("/api/v1/events", headers=KIOSK), 403, "forbidden")
    assert_problem(client.get("/api/v1/events",
                              headers={"authorization": "Bearer wrong"}), 401, "unauthorized")
    assert client.get("/api/v1/events", headers=CENTRAL).status_code == 200


def test_login_refusals(client: TestClient) -> None:
    r = client.post("/api/v1/sessions", json={"staff_id": "S001", "pin": "0000", "window": 1})
    assert_problem(r, 401, "unauthorized")
    r = client.post("/api/v1/sessions", json={"staff_id": "S999", "pin": "0000", "window": 1})
    assert_problem(r, 401, "unauthorized")
    login(client)
    r = client.post("/api/v1/sessions", json={"staff_id": "S002", "pin": "8002", "window": 1})
    assert_problem(r, 409, "window-taken", "/body/window")


def test_staff_flow_and_illegal_transitions(client: TestClient, runtime: HallRuntime) -> None:
    staff = login(client)
    for _ in range(3):
        client.post("/api/v1/tickets", json={"service": "SHMS"})
    # a window that is not yours
    assert_problem(client.post("/api/v1/windows/2/call-next", headers=staff), 403,
                   "not-your-window", "/path/window")
    # finishing before anything was called: refused, nothing changes
    head = runtime.store.head_seq
    assert_problem(client.post("/api/v1/windows/1/finish", headers=staff), 409,
                   "no-current-ticket")
    assert runtime.store.head_seq == head
    r = client.post("/api/v1/windows/1/call-next", headers=staff)
    assert r.status_code == 200 and r.json()["called"]["number"] == "A001"
    assert_problem(client.post("/api/v1/windows/1/finish", headers=staff), 409,
                   "illegal-transition")
    assert runtime.store.head_seq == head + 1
    assert client.post("/api/v1/windows/1/recall", headers=staff).json()["current"]["recalls"] == 1
    assert client.post("/api/v1/windows/1/start", headers=staff).status_code == 200
    w = client.post("/api/v1/windows/1/finish", headers=staff).json()
    assert w["current"] is None and w["next"]["number"] == "A002"
    # no-show and reactivate
    client.post("/api/v1/windows/1/call-next", headers=staff)
    assert client.post("/api/v1/windows/1/no-show", headers=staff).status_code == 200
    r = client.post("/api/v1/tickets/A002/reactivate", json={}, headers=staff)
    assert r.status_code == 200 and r.json()["state"] == "waiting"
    # transfer to another service
    client.post("/api/v1/windows/1/call-next", headers=staff)
    r = client.post("/api/v1/windows/1/transfer", json={"service": "ZCDJ"}, headers=staff)
    assert r.status_code == 200 and r.json()["new_ticket"]["number"] == "B001"
    # pause needs a reason; paused windows cannot call
    assert_problem(client.post("/api/v1/windows/1/pause", json={}, headers=staff), 422,
                   "validation", "/body/reason")
    client.post("/api/v1/windows/1/pause", json={"reason": "午休"}, headers=staff)
    assert_problem(client.post("/api/v1/windows/1/call-next", headers=staff), 409,
                   "window-paused")
    client.post("/api/v1/windows/1/resume", headers=staff)
    # out-of-order call with a reason
    r = client.post("/api/v1/windows/1/call", json={"ticket": "A003", "reason": "急事"},
                    headers=staff)
    assert r.status_code == 200 and r.json()["called"]["number"] == "A003"
    types = [e["type"] for e in client.get("/api/v1/events?limit=1000",
                                           headers=MANAGER).json()["events"]]
    for t in ("ticket.issued", "staff.logged_in", "ticket.called", "ticket.recalled",
              "ticket.started", "ticket.finished", "ticket.no_show", "ticket.reactivated",
              "ticket.transferred", "window.paused", "window.resumed"):
        assert t in types
    # logout refused with a ticket in hand, fine after
    assert_problem(client.delete("/api/v1/windows/1/session", headers=staff), 409,
                   "ticket-in-hand")
    client.post("/api/v1/windows/1/no-show", headers=staff)
    assert client.delete("/api/v1/windows/1/session", headers=staff).status_code == 200
    assert_problem(client.post("/api/v1/windows/1/call-next", headers=staff), 401,
                   "unauthorized")


def test_appointments_from_the_booking_platform(client: TestClient,
                                                runtime: HallRuntime) -> None:
    start = runtime.clock.now() + timedelta(minutes=10)
    body = {"code": "APP-2026-0001", "service": "GA", "slot_start": start.isoformat(),
            "slot_end": (start + timedelta(minutes=30)).isoformat()}
    assert_problem(client.post("/api/v1/appointments", json=body, headers=KIOSK), 403,
                   "forbidden")
    assert client.post("/api/v1/appointments", json=body, headers=CENTRAL).status_code == 201
    assert_problem(client.post("/api/v1/appointments", json=body, headers=CENTRAL), 409,
                   "duplicate-appointment", "/body/code")
    naive = dict(body, code="APP-2026-0002", slot_start="2026-11-23T10:00:00")
    assert_problem(client.post("/api/v1/appointments", json=naive, headers=CENTRAL), 422,
                   "validation", "/body/slot_start")
    r = client.post("/api/v1/appointments/APP-2026-0001/check-in", headers=KIOSK)
    assert r.status_code == 201 and r.json()["priority"] == "appointment"
    assert r.json()["number"] == "E001"


def test_events_paging(client: TestClient) -> None:
    for _ in range(5):
        client.post("/api/v1/tickets", json={"service": "SW"})
    page1 = client.get("/api/v1/events?after_seq=0&limit=3", headers=MANAGER).json()
    page2 = client.get(f"/api/v1/events?after_seq={page1['next_after_seq']}&limit=3",
                       headers=MANAGER).json()
    seqs = [e["seq"] for e in page1["events"] + page2["events"]]
    assert seqs == list(range(1, 7)) and page1["head_seq"] == 6
    issued = client.get("/api/v1/events?type=ticket.issued", headers=MANAGER).json()["events"]
    assert len(issued) == 5
    assert_problem(client.get("/api/v1/events?limit=0", headers=MANAGER), 422, "validation",
                   "/query/limit")


def test_board_is_public_and_hides_staff(client: TestClient) -> None:
    staff = login(client)
    client.post("/api/v1/tickets", json={"service": "SHMS"})
    client.post("/api/v1/windows/1/call-next", headers=staff)
    board = client.get("/api/v1/board").json()
    w1 = board["windows"][0]
    assert w1 == {"window": 1, "name": "社会民生 1号窗", "open": True, "paused": False,
                  "number": "A001", "state": "called"}
    assert "S001" not in json.dumps(board)


def test_openapi_lists_the_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/tickets", "/api/v1/sessions", "/api/v1/windows/{window}/call-next",
              "/api/v1/windows/{window}/finish", "/api/v1/events", "/api/v1/board/stream"):
        assert p in paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_board_stream_against_a_real_server(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(EXAMPLE_CONFIG), "--data",
         str(tmp_path), "--port", str(port), "--ignore-hours", "--no-devices"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        with httpx.stream("GET", f"{base}/api/v1/board/stream", timeout=10) as stream:
            lines = stream.iter_lines()
            first = [next(lines) for _ in range(2)]
            assert first[0] == "event: board"
            httpx.post(f"{base}/api/v1/tickets", json={"service": "RS"}, timeout=10)
            for line in lines:
                if line.startswith("data:"):
                    board = json.loads(line[5:])
                    rs = next(s for s in board["services"] if s["service"] == "RS")
                    if rs["issued"] == 1:
                        assert rs["waiting"] == 1
                        break
        # the journal stream: backlog from after_seq, then live events, resumable by seq
        events: list[dict[str, Any]] = []
        with httpx.stream("GET", f"{base}/api/v1/events/stream?after_seq=0", headers=MANAGER,
                          timeout=10) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(json.loads(line[5:]))
                if events[-1]["type"] == "ticket.issued" and \
                        events[-1]["data"]["service"] == "RS":
                    # the backlog reached the ticket taken above: now one live event
                    httpx.post(f"{base}/api/v1/tickets", json={"service": "SW"}, timeout=10)
                if events[-1]["type"] == "ticket.issued" and \
                        events[-1]["data"]["number"] == "G001":
                    break
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        page = httpx.get(base + "/").text
        assert "自助取号" in page
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
