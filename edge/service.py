"""What running as a hall's service adds to the box: readiness, the watchdog, the daily backup.

The assembly calls these; they know nothing of how the box is put together beyond the runtime
and the components it hands over.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from edge import systemd
from edge.backup import DailyBackup
from edge.health import DeviceHealth
from edge.runtime import HallRuntime
from edge.watchdog import Liveness, Watchdog

if TYPE_CHECKING:
    from edge.assembly import Box

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Keep what start-up built (imports, config, the assembled box) out of the collector.

    Those objects live as long as the process, yet every full collection walked all of them:
    30-45 ms with the loop stopped in a 250-window hall, and one landing in a burst of calls
    held every board back that long (bench/bench_devices.py found it). `gc.freeze()` moves them
    to a generation the collector never scans; what the day allocates is collected as before.
    Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def backup_components(rt: HallRuntime) -> list[Any]:
    cfg = rt.config.backup
    if not cfg.enabled:
        return []
    directory = Path(cfg.dir)
    if not directory.is_absolute():
        directory = rt.store.path.parent / directory

    def report(ok: bool, detail: str) -> None:
        # Journal a failure, and the recovery after one; a healthy day is not news.
        if ok and "backup" not in rt.health.current:
            return
        rt.health.report(DeviceHealth("backup", "backup", online=ok,
                                      grade=None if ok else "C", detail=detail))

    return [DailyBackup(rt.store.path, directory, at=cfg.at, keep=cfg.keep,
                        now=lambda: rt.hall.local(), report=report)]


# A commit group stuck longer than this (a hung disk, a lock never released) counts as a hung
# writer. Above SQLite's busy timeout (5 s), below the unit's WatchdogSec (30 s).
WRITER_MAX_STALL_S = 20.0


def liveness_checks(box: Box) -> list[Liveness]:
    """The parts besides the event loop whose death must stop the watchdog's pings: the
    store's writer thread (dead, or stuck in one group) and each component's supervisor."""
    checks = [Liveness("store writer",
                       lambda: box.store.writer_responsive(WRITER_MAX_STALL_S))]
    for sup in box.supervised:
        checks.append(Liveness(f"supervisor {sup.name}", sup.watching))
    return checks


def start_watchdog(checks: list[Liveness]) -> asyncio.Task[None] | None:
    interval = systemd.watchdog_interval()
    if interval is None:
        return None
    return asyncio.create_task(Watchdog(checks, interval).run(), name="watchdog")


async def announce_ready(server: Any, host: str, port: int) -> None:
    """READY=1 once the API answers a request, not merely once the socket is bound."""
    while not server.started:
        await asyncio.sleep(0.05)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                r = await client.get(f"http://{url_host}:{port}/healthz")
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    systemd.notify(f"READY=1\nSTATUS=serving on {host}:{port}")
