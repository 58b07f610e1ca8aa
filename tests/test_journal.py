"""The one event path: state, journal and outbox in one transaction, and a chain that tells."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge.domain.model import DomainEvent
from edge.events import GENESIS_HASH, canonical_json, event_hash
from edge.runtime import HallRuntime
from edge.verify import verify_db
from tests.conftest import db_of


def fill(rt: HallRuntime, n: int = 6) -> None:
    for i in range(n):
        rt.execute(lambda h, i=i: h.issue("SHMS" if i % 2 else "ZCDJ"))


def hallbox_verify(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "verify", str(db)],
                          capture_output=True, text=True, timeout=60)


def tamper(db: Path, sql: str, *args: object) -> None:
    """What an attacker with the file can do: drop the guards, then edit."""
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER journal_no_update")
    con.execute("DROP TRIGGER journal_no_delete")
    con.execute(sql, args)
    con.commit()
    con.close()


def test_chain_is_gapless_and_linked(runtime: HallRuntime) -> None:
    fill(runtime)
    events = runtime.store.events_after(0, 100)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["prev_hash"] == GENESIS_HASH
    for a, b in itertools.pairwise(events):
        assert b["prev_hash"] == a["hash"]
    for e in events:
        assert e["hash"] == event_hash(e)
        assert e["site"] == "gz-tianhe" and e["box"] == "box-01"
        assert e["ts"].endswith("+08:00")
    ok = hallbox_verify(runtime.store.path)
    assert ok.returncode == 0 and "intact" in ok.stdout


def test_hash_is_sha256_of_canonical_json() -> None:
    env = {"id": "x", "seq": 1, "ts": "2026-11-23T09:00:00.000+08:00", "site": "s", "box": "b",
           "type": "ticket.issued", "data": {"名": "张", "b": [1, 2]}, "prev_hash": GENESIS_HASH}
    assert canonical_json(env).startswith(b'{"box":"b","data":{"b":[1,2],"\xe5')
    import hashlib
    assert event_hash(env) == hashlib.sha256(canonical_json(env)).hexdigest()


def test_journal_refuses_edits(runtime: HallRuntime) -> None:
    fill(runtime, 2)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db_of(runtime).execute("UPDATE journal SET type='x' WHERE seq=1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db_of(runtime).execute("DELETE FROM journal WHERE seq=1")


@pytest.mark.parametrize("case", ["alter", "alter_rehashed", "remove", "remove_tail", "insert"])
def test_verify_finds_single_row_tampering(runtime: HallRuntime, case: str) -> None:
    fill(runtime, 8)
    db = runtime.store.path
    runtime.close()
    con = sqlite3.connect(db)
    env = json.loads(con.execute("SELECT envelope FROM journal WHERE seq=4").fetchone()[0])
    con.close()
    if case == "alter":
        env["data"]["number"] = "A999"
        tamper(db, "UPDATE journal SET envelope=? WHERE seq=4", json.dumps(env))
        broken = 4
    elif case == "alter_rehashed":
        # the forger recomputes this event's hash, but the next event still points at the old one
        env["data"]["number"] = "A999"
        env["hash"] = event_hash(env)
        tamper(db, "UPDATE journal SET envelope=?, hash=? WHERE seq=4", json.dumps(env),
               env["hash"])
        broken = 5
    elif case == "remove":
        tamper(db, "DELETE FROM journal WHERE seq=4")
        broken = 4
    elif case == "remove_tail":
        last = runtime.store.head_seq
        tamper(db, "DELETE FROM journal WHERE seq=?", last)
        broken = last
    else:
        # insert a forged event between 3 and 4: shift is impossible, so it lands as a dup seq
        # or at the end; put it at the end with a plausible seq but a wrong prev_hash
        forged = dict(env, seq=100, id="forged")
        forged["hash"] = event_hash(forged)
        tamper(db, "INSERT INTO journal VALUES (?,?,?,?,?,?,?)", 100, "forged", forged["ts"],
               forged["type"], forged["prev_hash"], forged["hash"], json.dumps(forged))
        broken = runtime.store.head_seq + 1
    r = verify_db(db)
    assert not r.ok and r.broken_seq == broken, r
    cli = hallbox_verify(db)
    assert cli.returncode == 1 and f"BROKEN at seq {broken}" in cli.stdout


def test_inserted_event_in_the_middle_breaks_the_chain(runtime: HallRuntime) -> None:
    fill(runtime, 4)
    db = runtime.store.path
    runtime.close()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT envelope FROM journal ORDER BY seq").fetchall()
    con.close()
    # rewrite the table with a forged event spliced in after seq 2 and the rest renumbered,
    # keeping their original hashes: the first renumbered event no longer verifies
    envs = [json.loads(r[0]) for r in rows]
    forged = dict(envs[1], id="forged", seq=3, prev_hash=envs[1]["hash"])
    forged["hash"] = event_hash(forged)
    spliced = [*envs[:2], forged] + [dict(e, seq=e["seq"] + 1) for e in envs[2:]]
    tamper(db, "DELETE FROM journal")
    con = sqlite3.connect(db)
    for e in spliced:
        con.execute("INSERT INTO journal VALUES (?,?,?,?,?,?,?)", (
            e["seq"], e["id"], e["ts"], e["type"], e["prev_hash"], e["hash"], json.dumps(e)))
    con.commit()
    con.close()
    r = verify_db(db)
    assert not r.ok and r.broken_seq == 4


def test_state_journal_outbox_commit_together(runtime: HallRuntime) -> None:
    fill(runtime, 2)
    head = runtime.store.head_seq

    def explode(db: sqlite3.Connection) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        runtime.execute(lambda h: h.issue("SHMS"), writes=[explode])
    db = db_of(runtime)
    assert runtime.store.head_seq == head
    assert db.execute("SELECT max(seq) FROM journal").fetchone()[0] == head
    assert db.execute("SELECT max(seq) FROM outbox").fetchone()[0] == head
    assert db.execute("SELECT count(*) FROM tickets").fetchone()[0] == 2
    # memory was reloaded from disk: the failed ticket is not there and numbering continues
    assert len(runtime.hall.tickets) == 2
    t = runtime.execute(lambda h: h.issue("SHMS"))
    assert t.number == "A002"  # A001 was taken before; the refused A002 left no trace
    assert verify_db(runtime.store.path).ok


def test_subscribers_run_after_commit_and_failures_are_contained(
        runtime: HallRuntime) -> None:
    seen: list[tuple[int, int]] = []

    def watcher(env: dict[str, object]) -> None:
        # the event is already on disk when a subscriber sees it
        n = db_of(runtime).execute("SELECT count(*) FROM journal WHERE seq=?",
                                     (env["seq"],)).fetchone()[0]
        seen.append((int(env["seq"]), n))  # type: ignore[call-overload]

    def broken(env: dict[str, object]) -> None:
        raise ValueError("printer on fire")

    runtime.bus.subscribe("broken", broken)
    runtime.bus.subscribe("watcher", watcher)
    runtime.execute(lambda h: h.issue("SHMS"))
    assert seen and all(n == 1 for _, n in seen)


def test_restart_restores_the_hall(runtime: HallRuntime, hall_config, clock, tmp_path) -> None:
    runtime.execute(lambda h: (None, h.login("S001", 1)))
    fill(runtime, 3)
    runtime.execute(lambda h: h.call_next(1))
    head = runtime.store.head_seq
    runtime.close()
    rt2 = HallRuntime.open(hall_config, tmp_path / "data", clock=clock)
    try:
        assert rt2.store.head_seq == head
        assert rt2.hall.windows[1].staff == "S001" and rt2.hall.windows[1].current
        assert rt2.execute(lambda h: h.issue("SHMS")).number == "A002"
        rt2.emit([DomainEvent("device.health", {"device": "x", "class": "printer",
                                                "online": False, "grade": "B",
                                                "detail": "paper end"})])
        assert verify_db(rt2.store.path).ok
    finally:
        rt2.close()


def test_unexpected_failure_mid_operation_rolls_memory_back(runtime: HallRuntime) -> None:
    fill(runtime, 1)

    def buggy(h):  # type: ignore[no-untyped-def]
        h.issue("SHMS")  # changes memory ...
        raise KeyError("bug")  # ... then fails before returning its events

    with pytest.raises(KeyError):
        runtime.execute(buggy)
    t = runtime.execute(lambda h: h.issue("SHMS"))
    assert t.number == "A001"  # the half-done A001 was dropped, not committed silently
    events = runtime.store.events_after(0, 100)
    issued = [e["data"]["number"] for e in events if e["type"] == "ticket.issued"]
    assert issued == ["B001", "A001"]
    assert verify_db(runtime.store.path).ok
