"""The one place the box is put together: from a config to a running hall.

`build_box()` opens the store, builds the runtime, the hall services (ratings, the print desk,
fingerprint sensors, central commands), asks each device plugin for its components, adds the
MQTT link, and creates the API, handing every part what it needs. `hallbox run`, the tests'
harness and the benchmarks all start the box through it, so what is tested is what runs.

The core does not import `drivers/`: device plugins are callables `(BoxContext) -> components`
that the caller passes in (`hallbox run` finds them through the `hallbox.devices` entry points
of the installed package; tests pass them explicitly).

Every component is supervised: one that fails to start, or whose `alive()` turns false, is
restarted with backoff. Its failure and its recovery each show once in the log and in health
(`component.<name>`), not once per retry; a component never stops the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edge.announcements import Announcer
from edge.clock import Clock
from edge.config import HallConfig
from edge.health import DeviceHealth
from edge.runtime import HallRuntime
from edge.sensors import FingerprintSensor
from edge.store import Store

if TYPE_CHECKING:
    from fastapi import FastAPI

    from edge.link.commands import Handler
    from edge.printing import PrintDesk
    from edge.ratings import RatingService
    from edge.supervision import Supervision

log = logging.getLogger(__name__)


@runtime_checkable
class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class HallServices:
    """The hall's shared services, built once and handed to the API, drivers and commands."""

    ratings: RatingService | None = None
    print_desk: PrintDesk | None = None
    sensors: dict[str, FingerprintSensor] = field(default_factory=dict)  # by sensor id
    # Central commands by name (edge.link.commands.builtin_commands plus what features add).
    commands: dict[str, Handler] = field(default_factory=dict)
    announcer: Announcer | None = None  # the box's own call announcements, for web boards
    supervision: Supervision | None = None  # attendance, alerts, spot checks
    video: Any = None  # edge.recorder.service.VideoService when [video] has cameras

    def sensor_at(self, window: int) -> FingerprintSensor | None:
        return next((s for s in self.sensors.values() if s.window == window), None)


@dataclass
class BoxContext:
    """What a device plugin gets to build its components."""

    runtime: HallRuntime
    services: HallServices
    data_dir: Path
    sim: bool
    devices: bool = True  # False with `hallbox run --no-devices`
    # With --sim: simulators add {"class", "id", "endpoint", ...} entries (written to sim.json)
    sim_devices: list[dict[str, Any]] = field(default_factory=list)
    sims: list[Any] = field(default_factory=list)  # the simulator objects, for tests and demo


DevicePlugin = Callable[[BoxContext], list[Any]]


class Supervised:
    """Starts a component, watches it, restarts it with backoff; reports once each way."""

    def __init__(self, comp: Any, rt: HallRuntime, *, min_backoff: float = 0.5,
                 max_backoff: float = 30.0, check_every: float = 1.0) -> None:
        self.comp = comp
        self.rt = rt
        self.name = str(getattr(comp, "name", type(comp).__name__))
        self.min_backoff, self.max_backoff, self.check_every = (
            min_backoff, max_backoff, check_every)
        self.running = False
        self.failed = False
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def _alive(self) -> bool:
        probe = getattr(self.comp, "alive", None)
        return bool(probe()) if callable(probe) else True

    async def start(self) -> None:
        """Try once now (so the box starts in a known order), then watch in the background."""
        try:
            await self.comp.start()
            self.running = True
        except Exception as e:
            self._fail(f"failed to start: {type(e).__name__}: {e}")
        self._task = asyncio.create_task(self._watch(), name=f"supervise-{self.name}")

    def _fail(self, why: str) -> None:
        if not self.failed:
            self.failed = True
            log.error("component %s %s; restarting with backoff", self.name, why)
            self._report(False, why)

    def _report(self, ok: bool, detail: str) -> None:
        with contextlib.suppress(Exception):
            self.rt.health.report(DeviceHealth(
                f"component.{self.name}", "component", ok, None if ok else "B", detail))

    async def _watch(self) -> None:
        delay = self.min_backoff
        while True:
            if self.running and self._alive():
                await asyncio.sleep(self.check_every)
                continue
            if self.running:
                self._fail("stopped unexpectedly")
                self.running = False
                with contextlib.suppress(Exception):
                    await self.comp.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
            try:
                await self.comp.start()
            except Exception as e:
                self._fail(f"failed to start: {type(e).__name__}: {e}")
                with contextlib.suppress(Exception):
                    await self.comp.stop()
                continue
            self.running = True
            self.restarts += 1
            delay = self.min_backoff
            if self.failed:
                self.failed = False
                log.info("component %s recovered", self.name)
                self._report(True, "recovered")

    def watching(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.running:
            self.running = False
            await self.comp.stop()


@dataclass
class Box:
    config: HallConfig
    data_dir: Path
    store: Store
    runtime: HallRuntime
    services: HallServices
    context: BoxContext
    components: list[Any]
    app: FastAPI
    supervised: list[Supervised] = field(default_factory=list)
    link: Any = None
    stop_timeout_s: float = 8.0  # per component; systemd's TimeoutStopSec covers them all
    _tick: asyncio.Task[None] | None = None

    @property
    def sims(self) -> list[Any]:
        return self.context.sims

    async def start(self, *, tick_every: float = 30.0) -> None:
        """Attach to the running loop, start every component under supervision."""
        self.runtime.attach(asyncio.get_running_loop())
        for comp in self.components:
            sup = Supervised(comp, self.runtime)
            await sup.start()
            self.supervised.append(sup)
        if self.context.sim:
            (self.data_dir / "sim.json").write_text(
                json.dumps({"devices": self.context.sim_devices}, indent=2,
                           ensure_ascii=False), encoding="utf-8")
        self._tick = asyncio.create_task(self._ticker(tick_every), name="hall-day-ticker")

    async def _ticker(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                self.runtime.tick()
            except Exception:
                log.exception("opening the business day failed; retrying")

    def alive(self) -> bool:
        """For the watchdog: the writer thread lives and every supervisor is still watching
        (a failing device is the supervisors' business, not a reason to restart the box)."""
        return self.store.writer_alive() and all(s.watching() for s in self.supervised)

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        for sup in reversed(self.supervised):
            started = time.monotonic()
            try:
                # Bounded: one component that hangs on its way out (a device that never
                # answers, a child process that ignores its signal) must not hold the box's
                # stop past systemd's budget and every other component's stop with it.
                await asyncio.wait_for(sup.stop(), self.stop_timeout_s)
            except TimeoutError:
                log.error("%s did not stop within %.0f s; left behind", sup.name,
                          self.stop_timeout_s)
            except Exception:
                log.exception("%s failed to stop cleanly", sup.name)
            else:
                took = time.monotonic() - started
                if took > 1.0:
                    log.warning("%s took %.1f s to stop", sup.name, took)
        self.supervised.clear()

    def close(self) -> None:
        self.runtime.close()


def build_box(config: HallConfig, data_dir: str | Path, *,
              plugins: Sequence[DevicePlugin] = (), sim: bool = False, devices: bool = True,
              clock: Clock | None = None, ignore_hours: bool = False) -> Box:
    """Build (not start) the whole box. Call `await box.start()` on the serving loop."""
    from edge.api.app import create_app
    from edge.link.commands import builtin_commands
    from edge.ratings import RatingService, RatingSweeper

    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    store = Store(data / "hallbox.db", site=config.hall.site, box=config.hall.box)
    rt = HallRuntime(config, store, clock=clock, ignore_hours=ignore_hours)
    rt.tick()
    services = HallServices()
    if config.rating is not None:
        services.ratings = RatingService(rt, config.rating)
    services.commands = builtin_commands()
    # Supervision: its service and central commands; its loop below.
    from edge.supervision import SupervisionLoop, install

    supervision = install(rt, services)
    ctx = BoxContext(rt, services, data, sim, devices=devices)
    components: list[Any] = []
    if services.ratings is not None:
        components.append(RatingSweeper(services.ratings))
    components.append(SupervisionLoop(supervision, config.alerts.evaluate_seconds))
    for plugin in plugins:
        try:
            components += plugin(ctx)
        except Exception:
            # A feature whose setup fails (a bad device path, a missing library) is left out;
            # the queue and the other features run on.
            log.exception("%s could not be set up; the hall runs without it",
                          getattr(plugin, "__module__", plugin))
    link = None
    if config.mqtt is not None:
        from edge.link.sender import Link

        link = Link(rt, config.mqtt, services.commands, services)
        components.append(link)
    else:
        log.info("no [mqtt] broker configured: events wait in the outbox (%d unsent)",
                 store.outbox_pending())
    app = create_app(rt, services)
    return Box(config, data, store, rt, services, ctx, components, app, link=link)


def installed_plugins() -> list[DevicePlugin]:
    """The device plugins of the installed package (entry point group `hallbox.devices`)."""
    from importlib.metadata import entry_points

    found = sorted(entry_points(group="hallbox.devices"), key=lambda e: e.name)
    return [e.load() for e in found]
