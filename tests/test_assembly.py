"""The one assembly: what it builds, that the core stands apart from the drivers, supervision."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from drivers import calling_devices, supervision_devices
from edge.assembly import Supervised, build_box
from edge.clock import FakeClock
from edge.config import HallConfig
from tests.conftest import ROOT
from tests.waiting import until


def test_the_core_never_imports_the_drivers() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "edge").rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+drivers\b", p.read_text(), re.M)]
    assert offenders == []


def test_two_boxes_in_one_process_share_nothing(hall_config: HallConfig, clock: FakeClock,
                                                tmp_path: Path) -> None:
    async def main() -> None:
        a = build_box(hall_config, tmp_path / "a", plugins=[calling_devices.build,
                                                            supervision_devices.build],
                      sim=True, clock=clock)
        b = build_box(hall_config, tmp_path / "b", plugins=[calling_devices.build,
                                                            supervision_devices.build],
                      sim=True, clock=clock)
        try:
            assert a.services.print_desk is not None and b.services.print_desk is not None
            assert a.services.print_desk is not b.services.print_desk
            assert a.services.ratings is not b.services.ratings
            assert set(a.services.sensors) == set(b.services.sensors) == {"fp-w1", "fp-w8"}
            assert not set(map(id, a.services.sensors.values())) & set(
                map(id, b.services.sensors.values()))
            assert a.services.commands is not b.services.commands
            assert a.sims and not set(map(id, a.sims)) & set(map(id, b.sims))
            await a.runtime.run(lambda h: h.issue("SHMS"))
            assert b.runtime.hall.tickets == {}
        finally:
            a.close()
            b.close()

    asyncio.run(main())


class Flaky:
    """A component whose work dies twice and then keeps running."""

    name = "flaky"

    def __init__(self) -> None:
        self.starts = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.starts += 1
        if self.starts == 2:
            raise OSError("device not there yet")
        self.task = asyncio.create_task(self._work())

    async def _work(self) -> None:
        if self.starts == 1:
            raise RuntimeError("the driver's task died")
        await asyncio.sleep(3600)

    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


def test_a_dying_component_is_restarted_and_reported_once_each_way(
        runtime, caplog: pytest.LogCaptureFixture) -> None:
    comp = Flaky()

    async def main() -> Supervised:
        runtime.attach(asyncio.get_running_loop())
        sup = Supervised(comp, runtime, min_backoff=0.01, check_every=0.01)
        await sup.start()
        await until(lambda: comp.starts >= 3 and comp.alive(), timeout=10)
        await asyncio.sleep(0.1)  # more checks while healthy: no further reports
        await sup.stop()
        return sup

    with caplog.at_level(logging.INFO, logger="edge.assembly"):
        sup = asyncio.run(main())
    runtime.store.flush()
    assert sup.restarts == 1 and comp.starts == 3
    failures = [r for r in caplog.records if "flaky" in r.getMessage()
                and r.levelno == logging.ERROR]
    recoveries = [r for r in caplog.records if "flaky recovered" in r.getMessage()]
    # Two failures in a row (died, then failed to start) are one failure until it recovers.
    assert len(failures) == 1 and len(recoveries) == 1
    health = [e["data"] for e in runtime.store.events_after(0, 100, ["device.health"])
              if e["data"]["device"] == "component.flaky"]
    assert [(h["online"], h["grade"]) for h in health] == [(False, "B"), (True, None)]


class Stuck:
    """A component whose stop never returns (a device that never answers its goodbye)."""

    name = "stuck"

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await asyncio.sleep(3600)


class Quick:
    name = "quick"
    stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


def test_a_component_that_hangs_on_stop_does_not_hold_the_box(
        hall_config: HallConfig, clock: FakeClock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    quick = Quick()

    async def main() -> float:
        box = build_box(hall_config, tmp_path / "box", clock=clock, devices=False)
        box.components[:0] = [quick]  # started first, stopped last: behind the stuck one
        box.components.append(Stuck())
        box.stop_timeout_s = 0.3
        await box.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await box.stop()
        took = loop.time() - t0
        box.close()
        return took

    with caplog.at_level(logging.ERROR, logger="edge.assembly"):
        took = asyncio.run(main())
    assert took < 5 and quick.stopped
    assert any("stuck did not stop within" in r.getMessage() for r in caplog.records)
