"""A whole simulated hall on one event loop, for the device tests and the device bench.

`running_hall()` builds the box exactly as `hallbox run --sim` does (the one assembly, with
the device plugins), starts every simulator and driver, and hands back the box, its runtime,
the simulators and an HTTP client on the real app. Tests run their coroutine with
`asyncio.run` (no plugin needed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from drivers import calling_devices, supervision_devices
from drivers.base import Link, SharedBus
from drivers.printer import TicketPrinter
from drivers.sim.board import BoardBusSim
from drivers.sim.keypad import KeypadBusSim
from drivers.sim.printer import PrinterSim
from edge.assembly import Box, BoxContext, build_box
from edge.clock import FakeClock
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


# The device plugins `hallbox run` finds through the package's entry points.
PLUGINS = (calling_devices.build, supervision_devices.build)


@dataclass
class SimHall:
    box: Box
    client: httpx.AsyncClient

    @property
    def rt(self) -> HallRuntime:
        return self.box.runtime

    @property
    def ctx(self) -> BoxContext:
        return self.box.context

    @property
    def components(self) -> list[Any]:
        return self.box.components

    @property
    def sims(self) -> list[Any]:
        return self.box.sims

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
        self.rt.store.flush()  # device events are queued, not waited for
        return self.rt.store.events_after(0, 1_000_000, [type_])

    async def all_online(self, timeout: float = 5.0) -> None:
        for link in self.links():
            assert await link.wait_online(timeout), f"{link.name} did not come up"

    async def take_ticket(self, service: str = "SHMS") -> dict[str, Any]:
        r = await self.client.post("/api/v1/tickets", json={"service": service}, headers=KIOSK)
        assert r.status_code == 201, r.text
        return r.json()

    async def login(self, staff: str, window: int) -> None:
        await self.rt.run(lambda h: (None, h.login(staff, window)))


@contextlib.asynccontextmanager
async def running_hall(tmp_path: Path, config: HallConfig | None = None,
                       clock: FakeClock | None = None,
                       plugins: tuple[Any, ...] = (calling_devices.build,),
                       ) -> AsyncIterator[SimHall]:
    """The calling devices by default; pass PLUGINS for the supervision devices too."""
    cfg = config or example_config()
    box = build_box(cfg, tmp_path / "data", plugins=plugins, sim=True,
                    clock=clock or FakeClock(MONDAY_0900))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=box.app),
                               base_url="http://127.0.0.1")  # the Host allowlist
    try:
        await box.start()
        sim_hall = SimHall(box, client)
        await sim_hall.all_online()
        await asyncio.sleep(0.05)  # let the first status poll and board writes settle
        yield sim_hall
    finally:
        await client.aclose()
        await box.stop()
        box.close()
