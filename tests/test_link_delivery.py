"""Order and completeness, PUBACK-driven marking, status with boot counter, and the ingest."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho

from edge.central.client import CentralBroker, connect_blocking, make_client
from edge.central.ingest import Ingest
from edge.central.store import CentralStore
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
    link_health,
    pg_database,
    pg_dsn,
    pki,
)

__all__ = ["broker", "pg_database", "pg_dsn", "pki"]


def burst(rt: HallRuntime, n: int, tag: str = "b") -> None:
    for i in range(n):
        rt.emit([DomainEvent("display.message", {
            "command_id": f"{tag}-{i}", "text": f"notice {i}", "seconds": 60,
            "target": "main"})])


class IngestThread:
    def __init__(self, b: Broker, dsn: str, **kw: object) -> None:
        self.ing = Ingest(CentralBroker(b.central_url()), dsn, keys={"*": "x" * 16},
                          **kw)  # type: ignore[arg-type]
        self.t = threading.Thread(target=self.ing.run, daemon=True)

    def __enter__(self) -> Ingest:
        self.t.start()
        return self.ing

    def __exit__(self, *a: object) -> None:
        self.ing.stop_event.set()
        self.t.join(10)


def test_events_arrive_in_order_and_complete(tmp_path: Path, broker: Broker, pg_dsn: str):
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1")), inflight=20, batch=50)
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    n = 300

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        burst(rt, n)
        await await_for(lambda: rt.store.outbox_pending() == 0, 30, "outbox drained")
        await link.stop()

    with IngestThread(broker, pg_dsn) as ing:
        asyncio.run(main())
        store = CentralStore(pg_dsn)
        head = rt.store.head_seq
        await_sync(lambda: store.seqs(SITE, "box-1") == list(range(1, head + 1)), 20,
                   "ingest holds exactly 1..head")
        assert head >= n
        assert store.breaks() == []
        assert ing.stats.rejected == 0
        evs = store.events(SITE, "box-1")
        assert evs[-1]["hash"] == rt.store.head_hash
    rt.close()


def await_sync(pred, timeout, what):
    from tests.link_fixtures import wait_for

    wait_for(pred, timeout, what)


def test_status_birth_will_and_boot(tmp_path: Path, broker: Broker):
    cfg = box_config("box-2", broker.url("box-2", box_password("box-2")))
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    got: list[dict] = []
    c = make_client(CentralBroker(broker.central_url()), "watcher")
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    connect_blocking(c, CentralBroker(broker.central_url()))
    c.subscribe(f"hallbox/v1/{SITE}/box-2/status", qos=1)

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: any(s.get("online") for s in got), 10, "birth")
        burst(rt, 3)
        await await_for(lambda: rt.store.outbox_pending() == 0, 10, "drained")
        await await_for(lambda: got[-1].get("head", {}).get("seq") == rt.store.head_seq, 10,
                        "status carries the head")
        await link.stop()
        await await_for(lambda: not got[-1]["online"], 10, "offline status")

    asyncio.run(main())
    birth = next(s for s in got if s["online"])
    assert birth["boot"] >= 1 and birth["protocol"] == "5"
    assert got[-1]["reason"] == "stopped"
    assert got[-1]["head"] == {"seq": rt.store.head_seq, "hash": rt.store.head_hash}
    boot1 = birth["boot"]
    # A restarted box announces a higher boot, so a late Will of the old one can be told apart.
    got.clear()

    async def again() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: any(s.get("online") for s in got), 10, "second birth")
        await link.stop()

    asyncio.run(again())
    assert next(s for s in got if s["online"])["boot"] > boot1
    c.disconnect()
    c.loop_stop()
    rt.close()


def test_no_broker_the_hall_runs_and_events_wait(tmp_path: Path):
    cfg = box_config("box-1", "mqtt://127.0.0.1:1")  # nothing listens on port 1
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        rt.execute(lambda h: h.issue("SHMS"))
        await await_for(lambda: getattr(link_health(rt), "detail", "") == "broker unreachable",
                        10, "link reports the broker unreachable")
        await link.stop()

    asyncio.run(main())
    h = rt.health.current["mqtt-link"]
    assert not h.online and h.grade == "B"
    assert rt.store.outbox_pending() == rt.store.head_seq  # nothing marked sent
    rt.close()


def test_broker_refusal_keeps_rows_unsent(tmp_path: Path, broker: Broker):
    # box-3's credentials but box-1's identity: every event topic is outside box-3's ACL, so
    # the broker refuses them (MQTT 5 PUBACK 0x87) and no row may be marked sent.
    cfg = box_config("box-1", broker.url("box-3", box_password("box-3")))
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        burst(rt, 5)
        await await_for(lambda: link.stats["refused"] >= 5, 10, "refusals seen")
        await link.stop()

    asyncio.run(main())
    assert rt.store.outbox_pending() == rt.store.head_seq
    assert rt.health.current["mqtt-link"].grade == "B"
    rt.close()


def test_paho_is_never_the_store(tmp_path: Path, broker: Broker):
    """With a window of 5, paho never holds more than 5 unacknowledged events."""
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1")), inflight=5)
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    peak = 0

    async def main() -> None:
        nonlocal peak
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link.connected, 10, "connected")
        burst(rt, 200)
        while rt.store.outbox_pending():
            assert link.conn is not None
            peak = max(peak, len(link.conn.client._out_messages))
            await asyncio.sleep(0.001)
        await link.stop()

    asyncio.run(main())
    assert 0 < peak <= 5 + 16  # window + a few status/health/reply messages
    assert isinstance(paho.MQTTv5, int)
    rt.close()


def test_last_will_after_sigkill_carries_the_births_boot(tmp_path: Path, broker: Broker):
    import signal
    import subprocess
    import sys

    got: list[dict] = []
    cb = CentralBroker(broker.central_url())
    c = make_client(cb, "will-watcher")
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    connect_blocking(c, cb)
    c.subscribe(f"hallbox/v1/{SITE}/box-3/status", qos=1)
    p = subprocess.Popen([sys.executable, str(Path(__file__).parent / "link_boxproc.py"),
                          str(tmp_path / "box"), broker.url("box-3", box_password("box-3")),
                          "box-3", "100000"], stdout=subprocess.PIPE, text=True)
    try:
        wait_sync(lambda: any(s.get("online") for s in got), 20, "birth")
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        wait_sync(lambda: got[-1].get("online") is False, 20, "the Will")
    finally:
        if p.poll() is None:
            p.kill()
        c.disconnect()
        c.loop_stop()
    birth = next(s for s in got if s.get("online"))
    will = got[-1]
    assert will == {"online": False, "boot": birth["boot"], "reason": "lost", "site": SITE,
                    "box": "box-3"}


def wait_sync(pred, timeout, what):
    from tests.link_fixtures import wait_for

    wait_for(pred, timeout, what)
