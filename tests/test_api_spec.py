"""The OpenAPI spec says what the API answers: auth, roles, and every refusal as problem+json."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.runtime import HallRuntime

MANAGER = {"authorization": "Bearer demo-manager-token"}
KIOSK = {"authorization": "Bearer demo-kiosk-token"}


@pytest.fixture
def client(runtime: HallRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), base_url="http://127.0.0.1") as c:
        yield c


def documented(spec: dict[str, Any], path: str, method: str, r: httpx.Response) -> None:
    op = spec["paths"][path][method]
    status = str(r.status_code)
    assert status in op["responses"], f"{method} {path} answered {status}, not in the spec"
    ctype = r.headers["content-type"].split(";")[0]
    content = op["responses"][status].get("content", {})
    assert ctype in content, f"{method} {path} {status} answered {ctype}, spec has {content}"


def test_spec_declares_bearer_roles_and_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"]}
    assert "Problem" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    events = spec["paths"]["/api/v1/events"]["get"]
    assert events["x-roles"] == ["manager", "central"]
    assert events["security"] == [{"bearer": []}]
    assert "manager" in events["description"]
    take = spec["paths"]["/api/v1/tickets"]["post"]
    assert take["x-roles"] == ["anonymous", "kiosk", "staff", "manager"]
    assert spec["paths"]["/api/v1/board"]["get"]["x-roles"] == ["anonymous"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "x-roles" in op, (method, path)
            # every operation may meet the request cap (edge.api.limits.LanGate)
            assert "Retry-After" in op["responses"]["503"]["headers"], (method, path)
            assert "max_requests" in op["responses"]["503"]["description"]
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    assert list(resp["content"]) == ["application/problem+json"], \
                        (method, path, status)


def test_what_endpoints_answer_is_in_the_spec(client: TestClient, runtime: HallRuntime
                                              ) -> None:
    spec = client.get("/openapi.json").json()
    staff = {"authorization": "Bearer " + client.post(
        "/api/v1/sessions", json={"staff_id": "S001", "pin": "8001", "window": 1}
    ).json()["token"]}
    calls: list[tuple[str, str, httpx.Response]] = []

    def call(method: str, path: str, url: str, **kw: Any) -> httpx.Response:
        r = client.request(method.upper(), url, **kw)
        calls.append((path, method, r))
        return r

    t = "/api/v1/tickets"
    call("post", t, t, json={"service": "SHMS"})  # 201
    call("post", t, t, json={"service": "SHMS"}, headers={"idempotency-key": "abcdefgh1"})
    call("post", t, t, json={"service": "SHMS"}, headers={"idempotency-key": "abcdefgh1"})
    call("post", t, t, json={"service": "NOPE"})  # 404
    call("post", t, t, json={})  # 422
    call("post", t, t, json={"service": "SHMS", "priority": "green"})  # 401
    call("post", t, t, json={"service": "SHMS", "source": "desk"}, headers=KIOSK)  # 403
    e = "/api/v1/events"
    for headers in ({}, KIOSK, MANAGER):
        call("get", e, e, headers=headers)  # 401, 403, 200
    call("get", e, e + "?limit=0", headers=MANAGER)  # 422
    w = "/api/v1/windows/{window}/finish"
    call("post", w, "/api/v1/windows/1/finish", headers=staff)  # 409 no current ticket
    call("post", w, "/api/v1/windows/2/finish", headers=staff)  # 403 not your window
    call("post", w, "/api/v1/windows/0/finish", headers=staff)  # 422
    call("post", w, "/api/v1/windows/1/finish")  # 401
    g = "/api/v1/windows/{window}"
    call("get", g, "/api/v1/windows/999", headers=MANAGER)  # 404
    call("get", g, "/api/v1/windows/1", headers=MANAGER)  # 200
    s = "/api/v1/sessions"
    call("post", s, s, json={"staff_id": "S002", "pin": "0000", "window": 2})  # 401
    call("post", s, s, json={"staff_id": "S002", "pin": "8002", "window": 1})  # 409
    statuses = {r.status_code for _, _, r in calls}
    assert {200, 201, 401, 403, 404, 409, 422} <= statuses
    for path, method, r in calls:
        documented(spec, path, method, r)
