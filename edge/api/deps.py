"""What the routers work with, handed over by create_app: no module-level registries.

`ApiContext` lives on `app.state.ctx`; routes take it through the `Ctx` dependency: the runtime,
the hall's services (ratings, the kiosk print desk, fingerprint sensors, supervision) as the
assembly built them, the live streams and the LAN guards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from edge.assembly import HallServices
from edge.runtime import HallRuntime
from edge.sensors import FingerprintSensor

if TYPE_CHECKING:
    from edge.api.guards import Guards
    from edge.api.streams import StreamHub


@dataclass
class ApiContext:
    rt: HallRuntime
    services: HallServices
    streams: StreamHub
    guards: Guards
    tablets: dict[str, int] = field(default_factory=dict)  # open sessions per tablet id
    tablet_sessions: dict[str, Any] = field(default_factory=dict)  # the live one per tablet
    # Idempotency-Keys being issued right now: a concurrent retry shares the first answer.
    pending_keys: dict[str, tuple[str, asyncio.Future[Any]]] = field(default_factory=dict)

    def sensor(self, sensor_id: str) -> FingerprintSensor | None:
        return self.services.sensors.get(sensor_id)

    def sensor_at(self, window: int) -> FingerprintSensor | None:
        return self.services.sensor_at(window)


def ctx_of(conn: HTTPConnection) -> ApiContext:
    ctx: ApiContext = conn.app.state.ctx
    return ctx


async def context(conn: HTTPConnection) -> ApiContext:
    # async: FastAPI runs a plain `def` dependency in its thread pool, two thread hops per
    # request for what is an attribute read.
    return ctx_of(conn)


Ctx = Annotated[ApiContext, Depends(context)]
