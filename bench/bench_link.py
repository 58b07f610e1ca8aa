"""Link benchmarks against a real Mosquitto (and PostgreSQL for the ingest figures).

Figures (one JSON line each, with a baseline measured in the same run):
- outbox_events_per_s: journal -> broker through the durable outbox (events posted on the
  loop and group-committed by the store's writer, PUBACK-driven marking in batches), baseline:
  a raw paho QoS 1 loop of the same payloads.
- drain_100k_s: time to drain a backlog of 100,000 events (unpaced), baseline: the raw loop.
- ingest_pg_events_per_s_1 / _2: events/s into PostgreSQL with 1 and 2 `hallbox central
  ingest` processes on one shared subscription, baseline: CentralStore.insert with no MQTT.

HALLBOX_BENCH_SCALE (default 1.0) scales the event counts down for a quick look.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.config import parse_config  # noqa: E402
from edge.domain.model import DomainEvent  # noqa: E402
from edge.events import GENESIS_HASH, seal  # noqa: E402
from edge.link.sender import Link  # noqa: E402
from edge.runtime import HallRuntime  # noqa: E402

SCALE = float(os.environ.get("HALLBOX_BENCH_SCALE", "1.0"))
PG_BASE = os.environ.get("HALLBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def out(bench: str, figure: str, value: float, unit: str, baseline: float, **kw: Any) -> None:
    print(json.dumps({"bench": bench, "figure": figure, "value": round(value, 3), "unit": unit,
                      "baseline": round(baseline, 3), **kw}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, d: Path) -> None:
        self.port = free_port()
        conf = d / "m.conf"
        conf.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n"
                        "allow_anonymous true\nmax_queued_messages 0\n"
                        "max_inflight_messages 100\n")
        self.p = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.p.terminate()
        self.p.wait(5)


def config(box: str, port: int, **mqtt: Any) -> Any:
    import tomllib

    raw = tomllib.loads((ROOT / "config" / "hall.example.toml").read_text(encoding="utf-8"))
    raw["hall"]["box"] = box
    raw["mqtt"] = {"url": f"mqtt://127.0.0.1:{port}", "command_key": "b" * 32,
                   "rate_per_s": 1_000_000, "inflight": 100, "batch": 1000, **mqtt}
    return parse_config(raw)


def raw_publish(port: int, items: list[tuple[str, bytes]], inflight: int = 100) -> float:
    """A bare paho QoS 1 loop, same window: seconds until every PUBACK is in."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{secrets.token_hex(3)}",
                    protocol=paho.MQTTv5)
    c.max_inflight_messages_set(inflight)
    acked = threading.Semaphore(0)
    c.on_publish = lambda *_a: acked.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(0.2)
    window = threading.Semaphore(inflight)
    done = [0]

    def on_pub(*_a: Any) -> None:
        done[0] += 1
        window.release()

    c.on_publish = on_pub
    t0 = time.perf_counter()
    for topic, payload in items:
        window.acquire()
        c.publish(topic, payload, qos=1)
    while done[0] < len(items):
        time.sleep(0.001)
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return took


def payloads(rt: HallRuntime) -> list[tuple[str, bytes]]:
    rows = sqlite3.connect(rt.store.path).execute(
        "SELECT type, envelope FROM journal ORDER BY seq").fetchall()
    site, box = rt.config.hall.site, rt.config.hall.box
    return [(f"hallbox/v1/{site}/{box}/events/{t}", e.encode()) for t, e in rows]


def ev(i: int) -> DomainEvent:
    return DomainEvent("display.message", {"command_id": f"bench-{i}", "text": f"通知 {i}",
                                           "seconds": 60, "target": "main"})


def bench_live(tmp: Path, port: int) -> None:
    n = int(5000 * SCALE)
    cfg = config("bench-live", port)
    rt = HallRuntime.open(cfg, tmp / "live", ignore_hours=True)

    async def main() -> float:
        rt.attach(asyncio.get_running_loop())
        link = Link(rt, cfg.mqtt)
        await link.start()
        while not link.connected:
            await asyncio.sleep(0.01)
        rt.store.flush()
        base = rt.store.head_seq
        t0 = time.perf_counter()
        for i in range(n):
            # As devices and the API produce on the loop: queued, committed in groups by the
            # store's writer thread while the sender drains the outbox.
            rt.post([ev(i)])
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the sender run, as the API loop would
        while rt.store.head_seq - base < n or rt.store.outbox_pending():
            await asyncio.sleep(0.005)
        took = time.perf_counter() - t0
        await link.stop()
        return took

    took = asyncio.run(main())
    items = [it for it in payloads(rt) if "/events/display.message" in it[0]][-n:]
    assert len(items) == n
    raw = raw_publish(port, items)
    rt.close()
    # The same production with no link at all: how much of the path is the journal itself.
    rt2 = HallRuntime.open(config("bench-journal", port), tmp / "journal", ignore_hours=True)

    async def journal_only() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            rt2.post([ev(i)])
            if i % 50 == 0:
                await asyncio.sleep(0)
        await asyncio.to_thread(rt2.store.flush)
        return n / (time.perf_counter() - t0)

    journal_rate = asyncio.run(journal_only())
    rt2.close()
    out("link", "outbox_events_per_s", n / took, "events/s", n / raw, events=n,
        ratio=round(raw / took, 3), journal_only_events_per_s=round(journal_rate, 1),
        note="events posted on the loop, group commit by the store's writer, sent rows "
        "marked in batches via store.write; baseline: raw paho QoS1 loop, same payloads")


def bench_drain(tmp: Path, port: int) -> None:
    n = int(100_000 * SCALE)
    cfg = config("bench-drain", port)
    rt = HallRuntime.open(cfg, tmp / "drain", ignore_hours=True)
    for b in range(0, n, 1000):
        rt.emit([ev(i) for i in range(b, min(n, b + 1000))])
    pending = rt.store.outbox_pending()

    async def main() -> float:
        link = Link(rt, cfg.mqtt)
        t0 = time.perf_counter()
        await link.start()
        while rt.store.outbox_pending():
            await asyncio.sleep(0.01)
        took = time.perf_counter() - t0
        await link.stop()
        return took

    took = asyncio.run(main())
    raw = raw_publish(port, payloads(rt)[-n:])
    rt.close()
    out("link", "drain_100k_s", took, "s", raw, events=pending,
        note="unpaced (rate_per_s 1e6), inflight 100; baseline: raw paho loop, same payloads")


def bench_ingest(tmp: Path, port: int) -> None:
    import psycopg

    from edge.central.store import CentralStore

    try:
        admin = psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=3)
    except Exception as e:
        print(json.dumps({"bench": "link", "figure": "ingest_pg", "skipped": str(e)}))
        return
    boxes, per_box = 4, int(5000 * SCALE)
    envs: list[dict[str, Any]] = []
    for b in range(boxes):
        prev = GENESIS_HASH
        for seq in range(1, per_box + 1):
            e = seal(seq=seq, ts=datetime.now(UTC), site="bench", box=f"b{b}",
                     type_="display.message", data={"n": seq}, prev_hash=prev)
            prev = e["hash"]
            envs.append(e)
    envs.sort(key=lambda e: (e["seq"], e["box"]))  # boxes interleaved, as on the wire
    items = [(f"hallbox/v1/bench/{e['box']}/events/{e['type']}", json.dumps(e).encode())
             for e in envs]
    name = f"hallbox_bench_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        for consumers in (1, 2):
            dsn_base = f"{PG_BASE}/{name}"
            schema = f"c{consumers}_{secrets.token_hex(3)}"
            with psycopg.connect(dsn_base, autocommit=True) as c:
                c.execute(f"CREATE SCHEMA {schema}")
                c.execute(f"CREATE SCHEMA {schema}_direct")
            dsn = f"{dsn_base}?options=-csearch_path%3D{schema}"
            direct = CentralStore(f"{dsn_base}?options=-csearch_path%3D{schema}_direct")
            t0 = time.perf_counter()
            for i in range(0, len(envs), 500):
                direct.insert(envs[i:i + 500])
            base = len(envs) / (time.perf_counter() - t0)
            direct.close()
            def start(consumers: int = consumers, dsn: str = dsn,
                      schema: str = schema) -> list[subprocess.Popen[bytes]]:
                return [subprocess.Popen(
                    [sys.executable, "-m", "edge.cli", "central", "ingest", "--url",
                     f"mqtt://127.0.0.1:{port}", "--db", dsn, "--client-id",
                     f"bi-{schema}-{k}", "--gap-interval", "3600", "--group",
                     f"bench-{schema}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    cwd=ROOT) for k in range(consumers)]

            # Sessions first, then offline: the broker queues the whole load for them, so the
            # figure is the ingest's rate, not the publisher's.
            procs = start()
            time.sleep(2.0)
            for p in procs:
                p.terminate()
                p.wait(10)
            raw_publish(port, items)
            store = CentralStore(dsn)
            t0 = time.perf_counter()
            procs = start()
            row = (0,)
            while time.perf_counter() - t0 < 600:
                row = store.conn.execute("SELECT count(*) FROM events").fetchone()
                store.conn.rollback()
                if row[0] >= len(envs):
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"ingest stored {row[0]} of {len(envs)} within 600 s")
            took = time.perf_counter() - t0
            for p in procs:
                p.terminate()
                p.wait(10)
            store.close()
            out("link", f"ingest_pg_events_per_s_{consumers}", len(envs) / took, "events/s",
                base, events=len(envs), consumers=consumers,
                note="queued in the broker, ingest start to all stored (incl. process start); "
                "baseline: CentralStore.insert direct, no MQTT")
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        m = Mosquitto(tmp)
        try:
            os.environ.pop("HALLBOX_MQTT_URL", None)
            bench_live(tmp, m.port)
            bench_drain(tmp, m.port)
            bench_ingest(tmp, m.port)
        finally:
            m.stop()


if __name__ == "__main__":
    main()
