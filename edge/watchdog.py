"""The systemd watchdog: pings only while every part the hall depends on is alive.

The pings are sent from a task on the event loop, so a loop that hangs (a blocking call, a
deadlock) sends none and systemd restarts the box after WatchdogSec. Other parts that can die
or hang on their own (the store's writer thread, the device supervisors) are passed in as
liveness checks by whoever assembles the box; one failing check also stops the pings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge import systemd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Liveness:
    """A named check: `alive()` is called on the event loop and must return quickly."""

    name: str
    alive: Callable[[], bool]


class Watchdog:
    def __init__(self, checks: Sequence[Liveness], interval: float,
                 notify: Callable[[str], bool] = systemd.notify) -> None:
        self.checks = list(checks)
        self.interval = interval
        self._notify = notify
        self.dead: list[str] = []

    def failing(self) -> list[str]:
        out = []
        for c in self.checks:
            try:
                ok = bool(c.alive())
            except Exception:
                log.exception("liveness check %s raised", c.name)
                ok = False
            if not ok:
                out.append(c.name)
        return out

    def beat(self) -> bool:
        """One round: ping when every check passes; else say which failed (once), no ping."""
        dead = self.failing()
        if dead != self.dead:
            if dead:
                log.error("watchdog: not alive: %s; pings stop, systemd will restart the box",
                          ", ".join(dead))
                self._notify("STATUS=not alive: " + ", ".join(dead))
            else:
                log.warning("watchdog: all parts alive again; pings resume")
                self._notify("STATUS=serving")
            self.dead = dead
        if dead:
            return False
        self._notify("WATCHDOG=1")
        return True

    async def run(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(self.interval)
