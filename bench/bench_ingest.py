"""Central ingest rate: events/s into PostgreSQL with 1, 2 and 4 `hallbox central ingest`
processes sharing one `$share/...` subscription.

Setup, per run: a Mosquitto of our own on a free loopback port, a fresh PostgreSQL database on
127.0.0.1:5432 (dropped at the end), and EVENTS hash-chained envelopes from BOXES boxes,
interleaved as on the wire. For each number of consumers (a schema of its own in the database):
the consumers start once to leave persistent sessions in the broker, stop, the whole load is
published (QoS 1) while they are away, and they start again. The figure is the steady rate:
events stored from the first stored one to the last (the processes' start-up is not the ingest's
rate; the rate including it is kept as `with_start_events_per_s`).

Baseline (same run, same envelopes): a raw psycopg insert of the same rows into a table of the
same columns, batches of BATCH, one commit per batch, no chain check, no MQTT (what PostgreSQL
itself takes). Kept beside it: `CentralStore.insert` called directly (the ingest's own SQL
with its chain checks, no MQTT) and a bare paho client receiving the same queued load (the
broker's and paho's share).

Table "ingest rate by consumers". HALLBOX_BENCH_SCALE (default 1.0) scales the event count.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.events import GENESIS_HASH, seal

ROOT = Path(__file__).resolve().parents[1]
PG_BASE = os.environ.get("HALLBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
SCALE = float(os.environ.get("HALLBOX_BENCH_SCALE", "1.0"))
BOXES = 8
EVENTS = int(20_000 * SCALE)
BATCH = 500
CONSUMERS = (1, 2, 4)
TABLE = "ingest rate by consumers"
WAIT_S = 600.0


def emit(figure: str, value: float, unit: str, baseline: float | None, **extra: Any) -> None:
    print(json.dumps({"bench": "ingest", "figure": figure, "value": round(value, 1),
                      "unit": unit, "baseline": None if baseline is None else round(baseline, 1),
                      **extra}, ensure_ascii=False), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(tmp: Path) -> Iterator[int]:
    """Our own broker: unlimited queues, so offline sessions keep the whole load."""
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\n"
                    "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 100\n"
                    "persistence false\n")
    p = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for _ in range(250):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            time.sleep(0.02)
        else:
            raise RuntimeError("mosquitto did not start")
        yield port
    finally:
        p.terminate()
        p.wait(10)


def envelopes() -> list[dict[str, Any]]:
    per_box = EVENTS // BOXES
    out: list[dict[str, Any]] = []
    for b in range(BOXES):
        prev = GENESIS_HASH
        for seq in range(1, per_box + 1):
            e = seal(seq=seq, ts=datetime.now(UTC), site="bench", box=f"box{b}",
                     type_="ticket.issued", data={"ticket": f"A{seq:03d}", "service": "SHMS"},
                     prev_hash=prev)
            prev = e["hash"]
            out.append(e)
    out.sort(key=lambda e: (e["seq"], e["box"]))  # boxes interleaved, as on the wire
    return out


def publish(port: int, items: list[tuple[str, bytes]], inflight: int = 100) -> None:
    """QoS 1, a window of `inflight`: returns once every PUBACK is in."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{secrets.token_hex(3)}",
                    protocol=paho.MQTTv5)
    c.max_inflight_messages_set(inflight)
    window = threading.Semaphore(inflight)
    acked = [0]

    def on_publish(*_a: Any) -> None:
        acked[0] += 1
        window.release()

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload in items:
            if not window.acquire(timeout=60):
                raise RuntimeError("broker stopped acknowledging")
            c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 60
        while acked[0] < len(items):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{acked[0]} of {len(items)} acknowledged")
            time.sleep(0.005)
    finally:
        c.disconnect()
        c.loop_stop()


def raw_insert(dsn: str, envs: list[dict[str, Any]]) -> float:
    """The baseline: the same rows, plain INSERTs in batches, no checks. Events/s."""
    import psycopg

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    rows = [(e["site"], e["box"], e["seq"], e["id"], e["type"], e["ts"], e["prev_hash"],
             e["hash"], json.dumps(e, ensure_ascii=False), now, "raw") for e in envs]
    with psycopg.connect(dsn) as conn:
        conn.execute("""CREATE TABLE events (
            site TEXT NOT NULL, box TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL,
            type TEXT NOT NULL, ts TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
            envelope TEXT NOT NULL, received_at TEXT NOT NULL, ingest TEXT NOT NULL,
            PRIMARY KEY (site, box, seq))""")
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(rows), BATCH):
                cur.executemany("INSERT INTO events VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                                "ON CONFLICT DO NOTHING", rows[i:i + BATCH])
                conn.commit()
        took = time.perf_counter() - t0
        stored = conn.execute("SELECT count(*) FROM events").fetchone()
    if not stored or stored[0] != len(envs):
        raise RuntimeError(f"raw insert stored {stored} of {len(envs)}")
    return len(envs) / took


def store_insert(dsn: str, envs: list[dict[str, Any]]) -> float:
    """The ingest's own SQL (chain checks, dedup, per-box lock), called directly. Events/s."""
    from edge.central.store import CentralStore

    store = CentralStore(dsn, ingest="direct")
    try:
        t0 = time.perf_counter()
        stored = 0
        for i in range(0, len(envs), BATCH):
            stored += store.insert(envs[i:i + BATCH]).stored
        took = time.perf_counter() - t0
    finally:
        store.close()
    if stored != len(envs):
        raise RuntimeError(f"CentralStore stored {stored} of {len(envs)}")
    return len(envs) / took


def paho_receive(port: int, items: list[tuple[str, bytes]]) -> float:
    """A bare paho QoS 1 subscriber draining the same load queued for its session. Events/s."""
    cid = f"raw-sub-{secrets.token_hex(3)}"
    got = [0]
    first: list[float] = []
    done = threading.Event()

    def client() -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
        ready = threading.Event()
        c.on_subscribe = lambda *_a: ready.set()
        c.on_connect = lambda c, *_a: c.subscribe("$share/raw/hallbox/v1/+/+/events/#", qos=1)

        def on_message(*_a: Any) -> None:
            if not first:
                first.append(time.perf_counter())
            got[0] += 1
            if got[0] == len(items):
                done.set()

        c.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
        c.loop_start()
        if not ready.wait(10):
            raise RuntimeError("raw subscriber not subscribed")
        return c

    c = client()
    c.disconnect()
    c.loop_stop()
    publish(port, items)
    got[0] = 0
    c = client()
    try:
        if not done.wait(WAIT_S):
            raise RuntimeError(f"raw subscriber got {got[0]} of {len(items)}")
        took = time.perf_counter() - first[0]
    finally:
        c.disconnect()
        c.loop_stop()
    return (len(items) - 1) / took


def start_consumers(n: int, port: int, dsn: str, tag: str) -> list[subprocess.Popen[str]]:
    """n `hallbox central ingest` processes; returns once each says it is up and subscribed."""
    procs = [subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "central", "ingest", "--url",
         f"mqtt://127.0.0.1:{port}", "--db", dsn, "--client-id", f"ingest-{tag}-{k}",
         "--group", f"bench-{tag}", "--gap-interval", "3600"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HALLBOX_LOG": "INFO"}) for k in range(n)]
    try:
        for p in procs:
            assert p.stderr
            deadline = time.monotonic() + 60
            said: list[str] = []
            for line in p.stderr:
                if " up, group " in line:
                    break
                said.append(line)
                if time.monotonic() > deadline:
                    raise RuntimeError("an ingest process did not come up")
            else:
                raise RuntimeError(f"an ingest process exited with {p.wait()}: "
                                   + "".join(said)[-1500:])
            # Its log is not read any further: drain it so a full pipe never blocks it.
            threading.Thread(target=lambda p=p: [None for _ in p.stderr],  # type: ignore[union-attr]
                             daemon=True).start()
    except BaseException:
        stop_consumers(procs)  # none left behind, retrying against a dropped database
        raise
    time.sleep(0.5)  # the SUBSCRIBE the "up" line announces is answered
    return procs


def stop_consumers(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def ingest_rate(n: int, port: int, dsn: str, items: list[tuple[str, bytes]],
                tag: str) -> dict[str, float]:
    import psycopg

    from edge.central.store import CentralStore

    # The tables first: n processes creating them at once would race in PostgreSQL's catalog.
    CentralStore(dsn).close()
    stop_consumers(start_consumers(n, port, dsn, tag))  # sessions the broker queues for
    publish(port, items)
    t0 = time.perf_counter()
    procs = start_consumers(n, port, dsn, tag)
    first_at: float | None = None
    first_count = 0
    count = 0
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
                now = time.perf_counter()
                count = row[0] if row else 0
                if first_at is None and count:
                    first_at, first_count = now, count
                if count >= len(items):
                    break
                if now - t0 > WAIT_S:
                    raise RuntimeError(f"{n} consumers stored {count} of {len(items)} "
                                       f"within {WAIT_S:.0f} s")
                time.sleep(0.02)
            done = time.perf_counter()
            breaks = conn.execute("SELECT count(*) FROM chain_breaks").fetchone()
            split = conn.execute("SELECT ingest, count(*) FROM events GROUP BY ingest "
                                 "ORDER BY ingest").fetchall()
    finally:
        stop_consumers(procs)
    assert first_at is not None
    steady = (len(items) - first_count) / (done - first_at) if done > first_at else 0.0
    return {"steady": steady, "with_start": len(items) / (done - t0),
            "breaks": float(breaks[0] if breaks else 0),
            "busiest_share": max(c for _i, c in split) / len(items)}


def main() -> None:
    import psycopg

    try:
        admin = psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=3)
    except Exception as e:
        print(json.dumps({"bench": "ingest", "figure": "ingest_rate", "skipped": str(e)}))
        return
    envs = envelopes()
    items = [(f"hallbox/v1/bench/{e['box']}/events/{e['type']}",
              json.dumps(e, ensure_ascii=False).encode()) for e in envs]
    name = f"hallbox_bench_ingest_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn_base = f"{PG_BASE}/{name}"

        def schema(s: str) -> str:
            with psycopg.connect(dsn_base, autocommit=True) as c:
                c.execute(f"CREATE SCHEMA {s}")
            return f"{dsn_base}?options=-csearch_path%3D{s}"

        raw = raw_insert(schema("raw"), envs)
        direct = store_insert(schema("direct"), envs)
        # A broker per measurement: sessions left by one (they keep queueing whatever is
        # published) must not weigh on the next.
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d:
            with mosquitto(Path(d)) as port:
                receive = paho_receive(port, items)
            for n in CONSUMERS:
                tag = f"c{n}_{secrets.token_hex(3)}"
                with mosquitto(Path(d)) as port:
                    r = ingest_rate(n, port, schema(tag), items, tag)
                emit(f"ingest_events_per_s_{n}_consumers", r["steady"], "events/s", raw,
                     table=TABLE, row=f"{n} consumer" + ("s" if n > 1 else ""),
                     column="events/s", events=len(envs), boxes=BOXES,
                     with_start_events_per_s=round(r["with_start"], 1),
                     store_insert_events_per_s=round(direct, 1),
                     paho_receive_events_per_s=round(receive, 1),
                     chain_breaks=int(r["breaks"]), busiest_share=round(r["busiest_share"], 3),
                     note="queued in the broker, first stored to all stored; baseline: raw "
                     "psycopg INSERT of the same rows (no MQTT, no chain check)")
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
