"""The one store: versioned schema and upgrades, group commit on the writer thread."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.clock import FakeClock
from edge.config import HallConfig
from edge.domain.model import (
    Appointment,
    AppointmentState,
    DomainEvent,
    Priority,
    Source,
    Ticket,
    TicketState,
    WindowState,
)
from edge.migrations import LATEST, MIGRATIONS, SchemaTooNew
from edge.runtime import HallRuntime
from edge.store import StateRows, Store
from edge.verify import verify_db
from tests.conftest import db_of

FIXTURES = Path(__file__).parent / "fixtures"
# Written by main before the schema had a version (user_version 0): 24 events, a staff session,
# an idempotency key, a punch seen, a fingerprint template, 5 events marked sent.
SCHEMA0 = FIXTURES / "hallbox-schema0.db"
SCHEMA0_HEAD = "166ac24e712d2120b011e99d95414d65922a6c5e89bc5b601bfeb87afadc7621"


def test_migrations_are_numbered_without_gaps() -> None:
    assert [m[0] for m in MIGRATIONS] == list(range(1, LATEST + 1))


def test_a_fresh_database_is_at_the_latest_version(tmp_path: Path) -> None:
    st = Store(tmp_path / "hallbox.db", site="s", box="b")
    try:
        assert st.schema_version() == LATEST
        assert st.applied_migrations == list(range(1, LATEST + 1))
    finally:
        st.close()
    again = Store(tmp_path / "hallbox.db", site="s", box="b")
    assert again.applied_migrations == []  # nothing runs twice
    again.close()


def test_a_database_from_the_unversioned_schema_upgrades_in_place(
        tmp_path: Path, hall_config: HallConfig, clock: FakeClock) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SCHEMA0, data / "hallbox.db")
    before = sqlite3.connect(data / "hallbox.db")
    assert before.execute("PRAGMA user_version").fetchone()[0] == 0
    before.close()
    rt = HallRuntime.open(hall_config, data, clock=clock)
    try:
        assert rt.store.schema_version() == LATEST
        assert rt.store.head_seq == 24 and rt.store.head_hash == SCHEMA0_HEAD
        # What the old box had is still there and used.
        assert rt.store.session("ab" * 32) == ("S001", 1, "2026-11-23T18:00:00+08:00")
        assert rt.store.idempotent_ticket("kiosk-key-0001") is not None
        assert rt.store.punch_seen(("zk-1", "7", "2026-11-23T08:31:00+08:00", 0, 1))
        assert rt.store.fingerprint_pages("fp-w1") == {3: "S001"}
        assert rt.store.outbox_pending() == 19
        assert len(rt.hall.tickets) == 12 and rt.hall.windows[1].staff == "S001"
        # ... and the chain goes on from the old head.
        t = rt.execute(lambda h: h.issue("SHMS"))
        assert t.number.startswith("A")
        assert rt.store.head_seq == 25
    finally:
        rt.close()
    r = verify_db(data / "hallbox.db")
    assert r.ok and r.events == 25, r


def test_a_database_from_a_newer_hallbox_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "hallbox.db")
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.close()
    with pytest.raises(SchemaTooNew, match="newer"):
        Store(tmp_path / "hallbox.db", site="s", box="b")


def test_concurrent_operations_share_fsyncs_and_keep_the_chain(runtime: HallRuntime) -> None:
    """200 tickets from 8 tasks at once: fewer commits than operations, a gapless chain, and
    every caller answered only once its ticket is on disk."""
    groups_before = runtime.store.stats["groups"]
    on_disk_when_answered: list[bool] = []

    async def take(n: int) -> None:
        for _ in range(n):
            t = await runtime.run(lambda h: h.issue("SHMS"))
            row = db_of(runtime).execute("SELECT 1 FROM tickets WHERE id=?",
                                         (t.id,)).fetchone()
            on_disk_when_answered.append(row is not None)

    async def main() -> None:
        runtime.attach(asyncio.get_running_loop())
        await asyncio.gather(*(take(25) for _ in range(8)))

    asyncio.run(main())
    assert len(on_disk_when_answered) == 200 and all(on_disk_when_answered)
    groups = runtime.store.stats["groups"] - groups_before
    assert groups < 200, "every operation committed alone: no group commit"
    assert runtime.store.stats["largest_group"] > 1
    r = verify_db(runtime.store.path)
    assert r.ok and r.events == runtime.store.head_seq
    numbers = [t.number for t in runtime.hall.tickets.values()]
    assert len(set(numbers)) == 200


def test_a_failed_group_fails_its_callers_and_memory_returns_to_disk(
        runtime: HallRuntime) -> None:
    runtime.execute(lambda h: h.issue("SHMS"))
    gate = threading.Event()

    def stall(db: sqlite3.Connection) -> None:
        gate.wait(5)  # hold the writer so the next operations queue behind this group

    def explode(db: sqlite3.Connection) -> None:
        raise OSError("disk I/O error")

    async def main() -> list[object]:
        runtime.attach(asyncio.get_running_loop())
        runtime.store.write(stall)
        first = asyncio.ensure_future(runtime.run(lambda h: h.issue("SHMS"), writes=[explode]))
        behind = asyncio.ensure_future(runtime.run(lambda h: h.issue("SHMS")))
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, behind, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, OSError) for r in results), results
    # Neither ticket exists in memory or on disk; numbering continues from disk.
    assert len(runtime.hall.tickets) == 1
    t = runtime.execute(lambda h: h.issue("SHMS"))
    assert t.number == "A002"
    assert verify_db(runtime.store.path).ok


def test_device_events_are_queued_without_waiting_and_flush_makes_them_durable(
        runtime: HallRuntime) -> None:
    async def main() -> None:
        runtime.attach(asyncio.get_running_loop())
        for i in range(50):
            runtime.post([DomainEvent("display.message", {
                "command_id": f"c{i}", "text": "t", "seconds": 60, "target": "main"})])
        await asyncio.to_thread(runtime.store.flush)

    asyncio.run(main())
    assert len(runtime.store.events_after(0, 1000, ["display.message"])) == 50


def test_a_group_is_published_in_commit_order_with_one_wake_up_of_the_loop(
        runtime: HallRuntime) -> None:
    """Operations committed together reach subscribers in seq order, each caller after its
    own events were published, and the writer wakes the loop once per group, not per job."""
    seen: list[int] = []
    runtime.bus.subscribe("t", lambda env: seen.append(env["seq"]))
    gate = threading.Event()
    wakeups = 0

    async def main() -> list[tuple[int, list[int]]]:
        nonlocal wakeups
        loop = asyncio.get_running_loop()
        runtime.attach(loop)
        real = loop.call_soon_threadsafe

        def counting(cb, *args, **kw):  # type: ignore[no-untyped-def]
            nonlocal wakeups
            wakeups += 1
            return real(cb, *args, **kw)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        runtime.store.write(lambda _db: gate.wait(5))  # the next 40 queue into one group

        async def take() -> tuple[int, list[int]]:
            t = await runtime.run(lambda h: h.issue("SHMS"))
            env = next(e for e in runtime.store.events_after(0, 1000, ["ticket.issued"])
                       if e["data"]["ticket"] == t.id)
            return env["seq"], list(seen)

        tasks = [asyncio.ensure_future(take()) for _ in range(40)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks)

    answers = asyncio.run(main())
    assert seen == sorted(seen) and len(seen) == 40
    for seq, seen_then in answers:
        assert seq in seen_then, "a caller continued before its event was published"
    assert wakeups < 40, f"{wakeups} wake-ups for 40 operations committed together"


_TIMES = st.none() | st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), ZoneInfo("Asia/Shanghai")]))
_TEXT = st.text(max_size=8)


@settings(max_examples=200, deadline=None)
@given(when=_TIMES.filter(lambda d: d is not None), later=_TIMES, text=_TEXT,
       state=st.sampled_from(list(TicketState)), n=st.integers(0, 10**6),
       flag=st.booleans(), window=st.none() | st.integers(1, 300))
def test_stored_documents_are_the_to_doc_documents(when: datetime, later: datetime | None,
                                                   text: str, state: TicketState, n: int,
                                                   flag: bool, window: int | None) -> None:
    """The rows the writer stores (orjson) load as what to_doc() and from_doc() agree on."""
    t = Ticket(id=text, day="2026-03-02", service=text, number=text, seq_no=n,
               priority=Priority.GREEN, source=Source.APP, issued_at=when, queued_at=when,
               state=state, front=flag, window=window, staff=text or None, called_at=later,
               finished_at=later, recalls=n, end_reason=text)
    w = WindowState(number=window or 1, staff=text, paused=flag, current=text,
                    priority_streak=n, logged_in_at=later)
    a = Appointment(code=text, service=text, slot_start=when, slot_end=when,
                    state=AppointmentState.CHECKED_IN, ticket=text or None)
    rows = StateRows.of([t], [w], [a])
    assert json.loads(rows.tickets[0][5]) == t.to_doc()
    assert json.loads(rows.windows[0][1]) == w.to_doc()
    assert json.loads(rows.appointments[0][2]) == a.to_doc()
    assert Ticket.from_doc(json.loads(rows.tickets[0][5])) == t
    assert WindowState.from_doc(json.loads(rows.windows[0][1])) == w
    assert Appointment.from_doc(json.loads(rows.appointments[0][2])) == a
