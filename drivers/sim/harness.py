"""A whole simulated hall on one event loop, for the device tests and the device bench.

`running_hall()` builds the box exactly as `hallbox run --sim` does (the same builder), starts
every simulator and driver, and hands back the runtime, the simulators and an HTTP client on
the real app. Tests run their coroutine with `asyncio.run` (no plugin needed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from drivers.base import Link, SharedBus
from drivers.hall import SIMS, build
from drivers.printer import TicketPrinter
from drivers.sim.board import BoardBusSim
from drivers.sim.keypad import KeypadBusSim
from drivers.sim.printer import PrinterSim
from edge.api.app import create_app
from edge.clock import FakeClock
from edge.components import RunContext
from edge.config import HallConfig, load_config
from edge.runtime import HallRuntime

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "hall.example.toml"
MONDAY_0900 = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
KIOSK = {"Authorization": "Bearer demo-kiosk-token"}


def example_config(**devices_override: Any) -> HallConfig:
    cfg = load_config(EXAMPLE)
    if devices_override:
        assert cfg.devices is not None
        cfg = cfg.model_copy(update={"devices": cfg.devices.model_copy(update=devices_override)})
    return cfg


@dataclass
class SimHall:
    rt: HallRuntime
    ctx: RunContext
    components: list[Any]
    client: httpx.AsyncClient
    sims: list[Any] = field(default_factory=list)

    @property
    def printer(self) -> PrinterSim:
        return next(s for s in self.sims if isinstance(s, PrinterSim))

    @property
    def boards(self) -> BoardBusSim:
        return next(s for s in self.sims if isinstance(s, BoardBusSim))

    @property
    def keypads(self) -> KeypadBusSim:
        return next(s for s in self.sims if isinstance(s, KeypadBusSim))

    def links(self) -> list[Link]:
        out = []
        for c in self.components:
            if isinstance(c, SharedBus):
                out.append(c.link)
            elif isinstance(c, TicketPrinter):
                out.append(c.link)
        return out

    def component(self, kind: type) -> Any:
        return next(c for c in self.components if isinstance(c, kind))

    def events(self, type_: str) -> list[dict[str, Any]]:
        return self.rt.store.events_after(0, 1_000_000, [type_])

    async def all_online(self, timeout: float = 5.0) -> None:
        for link in self.links():
            assert await link.wait_online(timeout), f"{link.name} did not come up"

    async def take_ticket(self, service: str = "SHMS") -> dict[str, Any]:
        r = await self.client.post("/api/v1/tickets", json={"service": service}, headers=KIOSK)
        assert r.status_code == 201, r.text
        return r.json()

    def login(self, staff: str, window: int) -> None:
        self.rt.execute(lambda h: (None, h.login(staff, window)))


@contextlib.asynccontextmanager
async def running_hall(tmp_path: Path, config: HallConfig | None = None,
                       clock: FakeClock | None = None) -> AsyncIterator[SimHall]:
    cfg = config or example_config()
    data = tmp_path / "data"
    rt = HallRuntime(cfg, data, clock=clock or FakeClock(MONDAY_0900))
    rt.tick()
    ctx = RunContext(rt, data, sim=True)
    comps = build(ctx)
    started = []
    try:
        for c in comps:
            await c.start()
            started.append(c)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)),
                                   base_url="http://hall")
        hall = SimHall(rt, ctx, comps, client, SIMS.get(str(data), []))
        await hall.all_online()
        await asyncio.sleep(0.05)  # let the first status poll and board writes settle
        yield hall
        await client.aclose()
    finally:
        for c in reversed(started):
            with contextlib.suppress(Exception):
                await c.stop()
        SIMS.pop(str(data), None)
        rt.close()
