"""The manager's notice on the hall boards (POST/DELETE /api/v1/board/notice): journalled as
display.message (source manager) / display.cleared, valid against their schemas, shown in the
web board's view, refused clearly to others and for bad input, nothing journalled then."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.domain.model import DomainEvent
from edge.runtime import HallRuntime
from tests.supervision_fixtures import check_schema, journal

MANAGER = {"authorization": "Bearer demo-manager-token"}
KIOSK = {"authorization": "Bearer demo-kiosk-token"}


@pytest.fixture
def client(runtime: HallRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), base_url="http://127.0.0.1") as c:
        yield c


def notices(rt: HallRuntime) -> list[dict[str, Any]]:
    return journal(rt, "display.message", "display.cleared")


def test_managers_notice_is_journalled_and_on_the_board(client: TestClient,
                                                        runtime: HallRuntime) -> None:
    assert client.get("/api/v1/hall-board").json()["notice"] is None
    r = client.post("/api/v1/board/notice", headers=MANAGER,
                    json={"text": " 今日16:00起系统维护 ", "seconds": 600})
    assert r.status_code == 201, r.text
    [env] = notices(runtime)
    assert env["type"] == "display.message" and env["seq"] == r.json()["seq"]
    assert env["data"] == {"text": "今日16:00起系统维护", "seconds": 600, "target": "main",
                           "source": "manager", "by": "manager"}
    check_schema(env)
    notice = client.get("/api/v1/hall-board").json()["notice"]
    assert notice["text"] == "今日16:00起系统维护" and notice["source"] == "manager"
    # a window's board only: not the hall board's notice
    assert client.post("/api/v1/board/notice", headers=MANAGER,
                       json={"text": "请到隔壁窗口", "target": 3}).status_code == 201
    assert client.get("/api/v1/hall-board").json()["notice"]["text"] == "今日16:00起系统维护"
    r = client.delete("/api/v1/board/notice", headers=MANAGER)
    assert r.status_code == 200, r.text
    cleared = notices(runtime)[-1]
    assert cleared["type"] == "display.cleared"
    assert cleared["data"]["target"] == "main" and cleared["data"]["source"] == "manager"
    check_schema(cleared)
    assert client.get("/api/v1/hall-board").json()["notice"] is None
    assert client.delete("/api/v1/board/notice?target=all", headers=MANAGER).json()[
        "cleared"]["target"] == "all"


def test_notice_time_runs_out(client: TestClient, runtime: HallRuntime) -> None:
    client.post("/api/v1/board/notice", headers=MANAGER, json={"text": "午休", "seconds": 60})
    assert client.get("/api/v1/hall-board").json()["notice"]["text"] == "午休"
    runtime.clock.advance(61)  # type: ignore[attr-defined]
    assert client.get("/api/v1/hall-board").json()["notice"] is None


def test_central_notices_still_validate(runtime: HallRuntime) -> None:
    """The central room's (its command's id) and an older one without `source` both pass;
    a manager's without `by` does not."""
    import jsonschema

    from edge.schemas import event_schemas

    schema = event_schemas()["display.message"]
    base = {"text": "x", "seconds": 60, "target": "main"}
    jsonschema.validate({**base, "command_id": "c-1", "source": "central"}, schema)
    jsonschema.validate({**base, "command_id": "c-1"}, schema)
    for bad in ({**base, "source": "manager"}, {**base, "source": "central"}, base):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    runtime.emit([DomainEvent("display.message", {**base, "command_id": "c-2",
                                                  "source": "central"})])


@pytest.mark.parametrize(("body", "pointer"), [
    ({"text": ""}, "/body/text"),
    ({"text": "   "}, "/body/text"),
    ({"text": "x" * 201}, "/body/text"),
    ({"text": "x", "seconds": 1}, "/body/seconds"),
    ({"text": "x", "target": 99}, "/body/target"),
    ({"text": "x", "target": "side"}, "/body/target"),
    ({"text": "x", "colour": "red"}, "/body/colour"),
])
def test_bad_notices_are_refused_with_a_pointer(client: TestClient, runtime: HallRuntime,
                                                body: dict[str, Any], pointer: str) -> None:
    r = client.post("/api/v1/board/notice", headers=MANAGER, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert any(e["pointer"].startswith(pointer) for e in r.json()["errors"]), r.json()
    assert notices(runtime) == []


def test_only_the_manager_posts_or_clears(client: TestClient, runtime: HallRuntime) -> None:
    body = {"text": "x"}
    assert client.post("/api/v1/board/notice", json=body).status_code == 401
    assert client.post("/api/v1/board/notice", json=body, headers=KIOSK).status_code == 403
    assert client.delete("/api/v1/board/notice").status_code == 401
    r = client.delete("/api/v1/board/notice?target=99", headers=MANAGER)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/query/target"
    assert notices(runtime) == []
