"""schemathesis against the box's own OpenAPI spec, once per role: no server errors, and every
status and content type answered is one the spec documents for that operation.

Bounded: a few generated requests per operation (about a minute for all roles). The two live
streams never end, so they are left to tests/test_api_streams.py and tests/test_api_spec.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    status_code_conformance,
)

from edge.api.app import create_app
from edge.clock import FakeClock
from edge.config import HallConfig
from edge.runtime import HallRuntime

EXAMPLES = 15
TOKENS = {"kiosk": "demo-kiosk-token", "manager": "demo-manager-token",
          "central": "demo-central-token"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


@pytest.fixture
def fuzz_runtime(hall_config: HallConfig, clock: FakeClock,
                 tmp_path: Path) -> Iterator[HallRuntime]:
    # schemathesis' ASGI client calls itself "testserver": allowed by config, as a hall would
    # list its own names.
    api = hall_config.api.model_copy(update={"allowed_hosts": ["testserver"]})
    rt = HallRuntime.open(hall_config.model_copy(update={"api": api}), tmp_path / "data",
                          clock=clock)
    rt.tick()
    yield rt
    rt.close()


@pytest.mark.parametrize("role", ["none", "kiosk", "staff", "manager", "central"])
def test_the_spec_holds_for_every_role(role: str, fuzz_runtime: HallRuntime) -> None:
    app = create_app(fuzz_runtime)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers: dict[str, str] = {}
    if role == "staff":
        from starlette.testclient import TestClient

        with TestClient(app, base_url="http://testserver") as c:
            r = c.post("/api/v1/sessions", json={"staff_id": "S001", "pin": "8001",
                                                 "window": 1})
            assert r.status_code == 201, r.text
            headers["authorization"] = f"Bearer {r.json()['token']}"
    elif role != "none":
        headers["authorization"] = f"Bearer {TOKENS[role]}"
    failures: list[str] = []
    answered: set[int] = set()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 30
    for op in operations:
        if op.path.endswith("/stream"):
            continue

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            answered.add(response.status_code)
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, BaseExceptionGroup) as e:  # one report for all operations
                failures.append(f"{case.operation.label}: {str(e).splitlines()[0]}")

        run()
    assert not failures, "\n".join(sorted(set(failures)))
    assert 500 not in answered and answered & {200, 201}, answered
