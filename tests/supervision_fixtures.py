"""Helpers for the tests of the supervision devices (evaluators, attendance terminals,
fingerprint sensors) and ratings: journal reads, schema checks, a served box, a served ticket.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema

from edge.assembly import HallServices
from edge.domain.rating import Outcome, RatingRequest, Submission
from edge.ratings import RatingService
from edge.runtime import HallRuntime
from tests.conftest import EXAMPLE_CONFIG, MONDAY_0900, ROOT, SHANGHAI

_REEXPORTED = (EXAMPLE_CONFIG, MONDAY_0900, SHANGHAI)  # other test modules import these here

SCHEMAS = ROOT / "edge" / "schemas" / "events"


class SyncRatings:
    """The rating service driven from synchronous test code."""

    def __init__(self, svc: RatingService) -> None:
        self.svc = svc
        self.desk = svc.desk

    def submit(self, sub: Submission) -> Outcome:
        return asyncio.run(self.svc.submit(sub))

    def request(self, window: int, ticket: str | None = None,
                staff: str | None = None) -> RatingRequest:
        return asyncio.run(self.svc.request(window, ticket, staff))

    def sweep(self) -> None:
        asyncio.run(self.svc.sweep())

    def pending_for(self, window: int) -> RatingRequest | None:
        return self.svc.pending_for(window)


def sync_ratings(rt: HallRuntime) -> SyncRatings:
    assert rt.config.rating is not None
    return SyncRatings(RatingService(rt, rt.config.rating))


def journal(rt: HallRuntime, *types: str) -> list[dict[str, Any]]:
    rt.store.flush()  # device events are queued, not waited for
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

    def __init__(self, rt: HallRuntime, services: HallServices | None = None) -> None:
        self.rt = rt
        self.services = services
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ServedBox:
        import asyncio

        import uvicorn

        from edge.api.app import create_app

        self.server = uvicorn.Server(uvicorn.Config(
            create_app(self.rt, self.services), host="127.0.0.1", port=self.port,
            log_level="warning", lifespan="off"))
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
