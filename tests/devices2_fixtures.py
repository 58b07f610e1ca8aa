"""Fixtures for the staff-device tests (ratings, evaluators, attendance, fingerprint sensors).

Kept out of conftest.py so parallel branches do not collide; test modules import what they use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from edge.clock import FakeClock
from edge.config import HallConfig, load_config
from edge.runtime import HallRuntime

# Star-imported by the test modules: only the fixtures (helpers are imported by name).
__all__ = ["d2_clock", "d2_config", "d2_runtime"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "hall.example.toml"
SCHEMAS = ROOT / "edge" / "schemas" / "events"
SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY_0900 = datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)


@pytest.fixture(scope="session")
def d2_config() -> HallConfig:
    return load_config(EXAMPLE_CONFIG)


@pytest.fixture
def d2_clock() -> FakeClock:
    return FakeClock(MONDAY_0900)


@pytest.fixture
def d2_runtime(d2_config: HallConfig, d2_clock: FakeClock, tmp_path: Path
               ) -> Iterator[HallRuntime]:
    rt = HallRuntime(d2_config, tmp_path / "data", clock=d2_clock)
    rt.tick()
    yield rt
    rt.close()


def journal(rt: HallRuntime, *types: str) -> list[dict[str, Any]]:
    return rt.store.events_after(0, 10**9, list(types) or None)


def check_schema(env: dict[str, Any]) -> None:
    """Validate an event's data against its JSON Schema file (only for types we own)."""
    path = SCHEMAS / f"{env['type']}.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(env["data"])


def serve_ticket(rt: HallRuntime, window: int, staff: str, service: str | None = None) -> str:
    """Log in if needed, issue, call, start and finish one ticket at a window; its id."""
    from edge.domain.model import Priority, Source

    hall = rt.hall
    if hall.windows[window].staff != staff:
        rt.execute(lambda h: (None, h.login(staff, window)))
    svc = service or hall.window_cfg[window].services[0].service
    t = rt.execute(lambda h: h.issue(svc, Priority.NORMAL, Source.KIOSK))
    rt.execute(lambda h: h.call(window, t.id, "test", staff))
    rt.execute(lambda h: (None, h.start(window, staff)))
    rt.execute(lambda h: (None, h.finish(window, staff)))
    return t.id


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedBox:
    """The real API under uvicorn on loopback, on the caller's event loop (the loop thread)."""

    def __init__(self, rt: HallRuntime) -> None:
        self.rt = rt
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ServedBox:
        import asyncio

        import uvicorn

        from edge.api.app import create_app

        self.server = uvicorn.Server(uvicorn.Config(
            create_app(self.rt), host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="off"))
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(500):
            if self.server.started:
                break
            await asyncio.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task
