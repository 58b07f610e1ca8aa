"""The central store (PostgreSQL and SQLite) and two ingest processes on one shared
subscription, with a gap made on purpose and filled by replay."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.central.store import CentralStore
from edge.domain.model import DomainEvent
from edge.events import GENESIS_HASH, seal
from edge.link.sender import Link
from edge.runtime import HallRuntime
from tests.link_fixtures import (
    CMD_KEY,
    SITE,
    Broker,
    await_for,
    box_config,
    box_password,
    broker,
    pg_database,
    pg_dsn,
    pki,
)

__all__ = ["broker", "pg_database", "pg_dsn", "pki"]


def chain(n: int, box: str = "b1", start: int = 1, prev: str = GENESIS_HASH) -> list[dict]:
    out = []
    for seq in range(start, start + n):
        env = seal(seq=seq, ts=datetime(2026, 11, 23, tzinfo=UTC), site=SITE, box=box,
                   type_="display.message", data={"n": seq}, prev_hash=prev)
        prev = env["hash"]
        out.append(env)
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "central.db")
    return request.getfixturevalue("pg_dsn")


def test_dedup_and_out_of_order_chain(dsn: str):
    s = CentralStore(dsn)
    evs = chain(50)
    shuffled = evs[:]
    random.Random(5).shuffle(shuffled)
    r1 = s.insert(shuffled[:30])
    r2 = s.insert(shuffled[20:] + evs[:10])
    assert r1.stored + r2.stored == 50
    assert r2.duplicates == 10 + 10
    assert s.seqs(SITE, "b1") == list(range(1, 51))
    assert s.breaks() == []
    assert s.find_gaps() == []
    s.close()


def test_tampering_is_caught(dsn: str):
    s = CentralStore(dsn)
    evs = chain(10)
    # seq 4 rewritten on the box with a fresh, self-consistent hash: its successor no longer fits
    forged = seal(seq=4, ts=datetime(2026, 11, 23, tzinfo=UTC), site=SITE, box="b1",
                  type_="display.message", data={"n": "forged"}, prev_hash=evs[2]["hash"])
    s.insert([*evs[:3], forged, *evs[4:]])
    assert ("prev-mismatch" in {b[3] for b in s.breaks()})
    # the original seq 4 arriving later is a different event for a taken seq
    s.insert([evs[3]])
    assert "seq-conflict" in {b[3] for b in s.breaks()}
    # an event whose content does not match its hash is refused and noted
    bad = dict(evs[0], box="b2", data={"n": 999})
    r = s.insert([bad])
    assert r.stored == 0 and r.breaks[0][3] == "bad-hash"
    # the successor is already stored when a forged predecessor arrives
    c3 = chain(5, box="b3")
    s.insert(c3[1:])
    assert not [b for b in s.breaks() if b[1] == "b3"]
    fake1 = seal(seq=1, ts=datetime(2026, 11, 23, tzinfo=UTC), site=SITE, box="b3",
                 type_="display.message", data={"n": "fake"}, prev_hash=GENESIS_HASH)
    s.insert([fake1])
    assert [(b[2], b[3]) for b in s.breaks() if b[1] == "b3"] == [(2, "prev-mismatch")]
    s.close()


def test_head_anchor_and_gaps(dsn: str):
    s = CentralStore(dsn)
    evs = chain(20)
    s.insert(evs[:5] + evs[8:15])
    s.status(SITE, "b1", {"online": True, "boot": 3, "head": {"seq": 20, "hash": evs[19]["hash"]},
                          "delivered_upto": 20})
    assert s.find_gaps() == [(SITE, "b1", 6, 8)]
    s.insert(evs[5:8])
    assert s.find_gaps() == [(SITE, "b1", 16, 20)]  # the tail the box says it delivered
    s.insert(evs[15:])
    assert s.find_gaps() == []
    assert s.box(SITE, "b1")["contiguous_upto"] == 20
    # a late Will of boot 2 does not undo boot 3's birth
    s.status(SITE, "b1", {"online": False, "boot": 2, "reason": "lost"})
    assert s.box(SITE, "b1")["online"] in (True, 1)
    s.status(SITE, "b1", {"online": False, "boot": 3, "reason": "lost"})
    assert s.box(SITE, "b1")["online"] in (False, 0)
    # a head that disagrees with what the centre holds: the box's history was rewritten
    s.status(SITE, "b1", {"online": True, "boot": 4, "head": {"seq": 12, "hash": "f" * 64}})
    assert "head-mismatch" in {b[3] for b in s.breaks()}
    # only one process gets to ask for a replay within the backoff
    assert s.claim_replay(SITE, "b1", 6, 8, 60) is True
    assert s.claim_replay(SITE, "b1", 6, 8, 60) is False
    s.close()


def _ingest_proc(broker: Broker, dsn: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, HALLBOX_LOG="INFO")
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "central", "ingest", "--url", broker.central_url(),
         "--db", dsn, "--key", CMD_KEY, "--client-id", name, "--gap-interval", "0.3",
         "--replay-backoff", "1"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def test_two_ingest_processes_share_and_fill_a_gap(tmp_path: Path, broker: Broker, pg_dsn: str):
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1")), inflight=20)
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    procs = [_ingest_proc(broker, pg_dsn, f"ingest-{i}", tmp_path / f"ingest-{i}.log")
             for i in range(2)]
    n = 400
    try:
        store = CentralStore(pg_dsn)

        async def main() -> None:
            # The gap, on purpose: rows 101..130 marked sent without ever being published,
            # as if lost between the broker and the centre.
            for i in range(n):
                rt.emit([DomainEvent("display.message", {
                    "command_id": f"g{i}", "text": f"n{i}", "seconds": 60, "target": "main"})])
            rt.store.write_sync(lambda db: db.execute(
                "UPDATE outbox SET sent_at='lost' WHERE seq BETWEEN 101 AND 130"))
            await asyncio.sleep(1.0)  # both ingest processes subscribed
            link = Link(rt, cfg.mqtt)
            await link.start()
            head = rt.store.head_seq
            await await_for(lambda: store.seqs(SITE, "box-1")[:head] == list(range(1, head + 1)),
                            60, "1..head stored, the gap filled by replay")
            assert link.stats["replayed"] >= 30
            await link.stop()

        asyncio.run(main())
        by = store.stored_by()
        assert set(by) == {"ingest-0", "ingest-1"}, by  # the shared subscription split the load
        assert sum(by.values()) == len(store.seqs(SITE, "box-1"))  # each event stored once
        assert store.breaks() == []
        store.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        rt.close()
    logs = "".join((tmp_path / f"ingest-{i}.log").read_text() for i in range(2))
    assert "asking for replay" in logs

