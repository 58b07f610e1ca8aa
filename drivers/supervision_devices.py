"""The device plugin for the staff's devices (entry point `hallbox.devices: staff`): evaluator
buses, attendance terminals and fingerprint sensors, and with --sim their simulators (started
first, drivers pointed at them, listed in {data}/sim.json).

In the simulated hall a staff login at a window is also a punch at the simulated attendance
terminal (check-in; logout is check-out), so the demo shows attendance events flowing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drivers.attendance import AttendanceDriver
from drivers.base import SharedBus
from drivers.evaluator import EvaluatorBusDriver
from drivers.fingerprint import FingerprintDriver
from drivers.protocols import zk
from drivers.sim.evaluator_keys import EvaluatorKeysSim
from drivers.sim.r30x import R30xSim
from drivers.sim.zk_terminal import ZkTerminalSim

if TYPE_CHECKING:
    from edge.assembly import BoxContext

log = logging.getLogger(__name__)


class _Sim:
    """A simulator as a component."""

    def __init__(self, name: str, sim: Any) -> None:
        self.name = name
        self.sim = sim

    async def start(self) -> None:
        await self.sim.start()

    async def stop(self) -> None:
        await self.sim.stop()


def build(ctx: BoxContext) -> list[Any]:
    rt = ctx.runtime
    out: list[Any] = []
    svc = ctx.services.ratings
    dev = rt.config.devices
    if dev is None or not ctx.devices:
        return out
    sim_dir = ctx.data_dir / "sim"
    if ctx.sim:
        sim_dir.mkdir(parents=True, exist_ok=True)

    # 4-key evaluators, one driver per bus.
    buses = {b.id: b for b in dev.buses}
    keyed: dict[str, list[Any]] = {}
    for e in dev.evaluators:
        if e.kind == "keypad" and e.bus in buses:
            keyed.setdefault(e.bus, []).append(e)
    for bus_id, evals in keyed.items():
        port = buses[bus_id].port
        if ctx.sim:
            sim = EvaluatorKeysSim(sim_dir / bus_id, [e.address for e in evals])
            out.append(_Sim(f"sim-{bus_id}", sim))
            ctx.sims.append(sim)
            port = sim.endpoint
            for e in evals:
                ctx.sim_devices.append({"class": "evaluator", "id": e.id, "endpoint": port,
                                        "address": e.address})
        if svc is None:
            log.warning("evaluators on %s but [rating] is absent; not started", bus_id)
            continue
        # Config keeps evaluators on a line of their own, so this builder owns its SharedBus.
        shared = SharedBus(bus_id, port, buses[bus_id].baudrate)
        out.append(EvaluatorBusDriver(rt, shared, evals, svc))
        out.append(shared)
    for e in dev.evaluators:
        if e.kind == "tablet" and ctx.sim:
            ctx.sim_devices.append({"class": "evaluator", "id": e.id,
                                    "endpoint": "/ws/evaluator", "window": e.window})

    # Attendance terminals.
    for a in dev.attendance:
        endpoint = None
        if ctx.sim:
            by_staff = {s: u for u, s in a.users.items()}
            users = [zk.ZkUser(i + 1, by_staff.get(s.id, s.id), s.name)
                     for i, s in enumerate(rt.config.staff)]
            zsim = ZkTerminalSim(users, encoding=a.encoding)
            out.append(_Sim(f"sim-{a.id}", zsim))
            ctx.sims.append(zsim)
            _punch_on_login(rt, zsim, by_staff)
            endpoint = _LateEndpoint(zsim)
        out.append(_Attendance(rt, a, endpoint, ctx))

    # Fingerprint sensors.
    for f in dev.fingerprints:
        port = None
        if ctx.sim:
            rsim = R30xSim(sim_dir / f.id, address=f.address, capacity=f.capacity)
            out.append(_Sim(f"sim-{f.id}", rsim))
            ctx.sims.append(rsim)
            port = rsim.endpoint
            ctx.sim_devices.append({"class": "fingerprint", "id": f.id, "endpoint": port})
        drv = FingerprintDriver(rt, f, endpoint=port)
        ctx.services.sensors[f.id] = drv
        out.append(drv)
    return out


class _LateEndpoint:
    """The simulated terminal's port is known only once it listens."""

    def __init__(self, sim: ZkTerminalSim) -> None:
        self.sim = sim


class _Attendance:
    """Builds the attendance driver at start, when a simulated terminal has its port."""

    def __init__(self, rt: Any, cfg: Any, late: _LateEndpoint | None, ctx: BoxContext) -> None:
        self.rt, self.cfg, self.late, self.ctx = rt, cfg, late, ctx
        self.name = f"attendance-{cfg.id}"
        self.driver: AttendanceDriver | None = None

    async def start(self) -> None:
        endpoint = self.late.sim.endpoint if self.late else None
        if endpoint:
            self.ctx.sim_devices.append({"class": "attendance", "id": self.cfg.id,
                                         "endpoint": endpoint})
        self.driver = AttendanceDriver(self.rt, self.cfg, endpoint=endpoint)
        await self.driver.start()

    async def stop(self) -> None:
        if self.driver:
            await self.driver.stop()


def _punch_on_login(rt: Any, sim: ZkTerminalSim, by_staff: dict[str, str]) -> None:
    def on_event(env: dict[str, Any]) -> None:
        if env["type"] not in ("staff.logged_in", "staff.logged_out"):
            return
        staff = env["data"]["staff"]
        now: datetime = rt.hall.local().replace(tzinfo=None)
        sim.punch(by_staff.get(staff, staff), now,
                  punch=0 if env["type"] == "staff.logged_in" else 1)

    rt.bus.subscribe("sim-attendance-punches", on_event)
