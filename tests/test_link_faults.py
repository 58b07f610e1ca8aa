"""Faults: the broker SIGKILLed mid-burst, the box SIGKILLed mid-burst, an hour offline, a
broker that stops answering (SIGSTOP)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.central.client import CentralBroker
from edge.central.ingest import Ingest
from edge.central.store import CentralStore
from edge.clock import FakeClock
from edge.domain.model import DomainEvent
from edge.link.sender import Link
from edge.runtime import HallRuntime
from tests.link_fixtures import (
    SITE,
    Broker,
    await_for,
    box_config,
    box_password,
    broker,
    pg_database,
    pg_dsn,
    pki,
    wait_for,
)

__all__ = ["broker", "pg_database", "pg_dsn", "pki"]
HERE = Path(__file__).resolve().parent


def start_ingest(b: Broker, dsn: str) -> tuple[Ingest, threading.Thread]:
    from tests.link_fixtures import CMD_KEY

    ing = Ingest(CentralBroker(b.central_url()), dsn, keys={"*": CMD_KEY},
                 gap_interval_s=0.3, replay_backoff_s=1.0, client_id=f"ing-{os.getpid()}")
    t = threading.Thread(target=ing.run, daemon=True)
    t.start()
    return ing, t


def complete(store: CentralStore, box: str, head: int) -> bool:
    return store.seqs(SITE, box) == list(range(1, head + 1))


@pytest.mark.parametrize("cycle", range(10))
def test_broker_killed_mid_burst(tmp_path: Path, broker: Broker, pg_dsn: str, cycle: int):
    """SIGKILL the broker part-way through a burst (a different point each cycle), restart it:
    every event ends up stored once; duplicates (counted) carry the same id."""
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1")), inflight=10, batch=20)
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    ing, t = start_ingest(broker, pg_dsn)
    n, kill_at = 120, 10 + cycle * 10

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link.connected, 10, "box connected")
        for i in range(n):
            rt.emit([DomainEvent("display.message", {
                "command_id": f"c{cycle}-{i}", "text": f"n{i}", "seconds": 60,
                "target": "main"})])
            if i == kill_at:
                broker.kill()
            if i == kill_at + 15:
                broker.start()
            await asyncio.sleep(0.003)
        await await_for(lambda: rt.store.outbox_pending() == 0, 30, "outbox drained")
        store = CentralStore(pg_dsn)
        await await_for(lambda: complete(store, "box-1", rt.store.head_seq), 40,
                        "ingest holds 1..head after the broker restart")
        assert store.breaks() == []  # a duplicate with another id would be a seq-conflict
        store.close()
        assert link.stats["connects"] >= 2  # it really lost the broker and came back
        print("cycle", cycle, link.stats, ing.stats.duplicates, "dups", ing.stats.replays,
              "replays")
        await link.stop()

    try:
        asyncio.run(main())
        assert rt.store.head_seq >= n
    finally:
        ing.stop_event.set()
        t.join(10)
        rt.close()


def test_box_sigkilled_mid_burst_ten_times(tmp_path: Path, broker: Broker, pg_dsn: str):
    """Kill the box process with SIGKILL 10 times mid-burst; every committed event arrives."""
    url = broker.url("box-2", box_password("box-2"))
    data = tmp_path / "box"
    ing, t = start_ingest(broker, pg_dsn)
    committed = 0
    try:
        for k in range(10):
            p = subprocess.Popen([sys.executable, str(HERE / "link_boxproc.py"), str(data), url,
                                  "box-2", "1000"], stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None
            want = 15 + 7 * k  # kill at a different point each time
            seen = 0
            for line in p.stdout:
                if line.startswith("committed"):
                    committed = max(committed, int(line.split()[1]))
                    seen += 1
                    if seen >= want:
                        break
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        # Restart once more and let it drain.
        out = subprocess.run([sys.executable, str(HERE / "link_boxproc.py"), str(data), url,
                              "box-2", "0"], capture_output=True, text=True, timeout=60)
        assert "drained" in out.stdout, out.stderr[-2000:]
        rt_head = _head(data)
        assert rt_head >= committed  # everything printed as committed is in the journal
        store = CentralStore(pg_dsn)
        wait_for(lambda: complete(store, "box-2", rt_head), 30, "ingest holds 1..head")
        assert store.breaks() == []
    finally:
        ing.stop_event.set()
        t.join(10)


def _head(data: Path) -> int:
    import sqlite3

    db = sqlite3.connect(data / "hallbox.db")
    try:
        return int(db.execute("SELECT max(seq) FROM journal").fetchone()[0])
    finally:
        db.close()


def hour_of_traffic(rt: HallRuntime, clock: FakeClock) -> int:
    """An hour of a small hall: tickets every 10 s, three windows calling and finishing."""
    staff = [s.id for s in rt.config.staff][:3]
    windows = [w.number for w in rt.config.windows][:3]
    for s, w in zip(staff, windows, strict=False):
        rt.execute(lambda h, s=s, w=w: (None, h.login(s, w)))
    services = [s.code for s in rt.config.services]
    start = clock.now()
    i = 0
    while clock.now() - start < timedelta(hours=1):
        rt.execute(lambda h, i=i: h.issue(services[i % len(services)]))
        w = windows[i % len(windows)]
        if rt.hall.current_ticket(w) is not None:
            rt.execute(lambda h, w=w: (None, h.finish(w)))
        t, _ = rt.hall.pick_next(w)
        if t is not None:
            rt.execute(lambda h, w=w: h.call_next(w))
            rt.execute(lambda h, w=w: (None, h.start(w)))
        clock.advance(10)
        i += 1
    return rt.store.head_seq


def test_hour_offline_then_paced_drain(tmp_path: Path, broker: Broker):
    rate = 400
    cfg = box_config("box-3", broker.url("box-3", box_password("box-3")), rate_per_s=rate,
                     batch=50, inflight=50)
    # A weekday morning in the hall's time zone (08:30 Asia/Shanghai).
    clock = FakeClock(datetime(2026, 11, 23, 0, 30, tzinfo=UTC))
    rt = HallRuntime.open(cfg, tmp_path / "box", clock=clock)
    broker.stop()

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        link.health_interval_s = 0.2
        await link.start()
        n = hour_of_traffic(rt, clock)
        assert n > 500
        await await_for(lambda: link.oldest_unsent_s >= 3600 and link.backlog >= n, 10,
                        "health shows the hour-old backlog")
        h = rt.health.current["mqtt-link"]
        assert not h.online and h.grade == "B" and h.metrics["backlog"] >= n
        broker.start()
        await await_for(lambda: link.connected, 10, "reconnected")
        t0 = time.monotonic()
        await await_for(lambda: rt.store.outbox_pending() == 0, 60, "backlog drained")
        took = time.monotonic() - t0
        # Paced: the token bucket lets `batch` go at once, then `rate` per second. A lower bound
        # only (a slow machine makes it longer, never shorter).
        assert took >= (n - cfg.mqtt.batch - 20) / rate * 0.9
        await link.stop()

    asyncio.run(main())
    rt.close()


def test_broker_that_stops_answering_is_noticed_by_the_keepalive(tmp_path: Path,
                                                                  broker: Broker):
    """SIGSTOP the broker: its TCP connection stays open but nothing answers. The link's own
    keepalive (paho runs on the loop, with no network thread to ping for it) must declare the
    connection lost; what was emitted meanwhile stays unsent, and after SIGCONT everything is
    delivered and marked sent."""
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1")), keepalive_s=5)
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    assert broker.proc is not None

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link.connected, 10, "connected")
        rt.emit([DomainEvent("display.message", {"command_id": "before", "text": "a",
                                                 "seconds": 60, "target": "main"})])
        await await_for(lambda: rt.store.outbox_pending() == 0, 10, "first event sent")
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            rt.emit([DomainEvent("display.message", {"command_id": "during", "text": "b",
                                                     "seconds": 60, "target": "main"})])
            await await_for(lambda: not link.connected, 40, "silent broker noticed")
            assert rt.store.outbox_pending() >= 1  # never acknowledged, so never marked
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        await await_for(lambda: rt.store.outbox_pending() == 0, 40, "delivered after SIGCONT")
        assert link.stats["connects"] >= 2
        await link.stop()

    asyncio.run(main())
    rt.close()
