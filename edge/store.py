"""The one store: hall state, the append-only journal and the outbox in SQLite, and every other
table the box keeps. No SQL is written anywhere else in the box.

Writes: one writer thread owns the write connection. Callers queue jobs (`submit`, `write`); the
writer takes whatever is queued, applies it in order inside ONE transaction and commits it with
one fsync (group commit), then answers each caller. Nothing is answered before its group is on
disk (WAL, synchronous=FULL), so a 2xx still means "survives a crash or a power cut", while the
asyncio loop never waits on an fsync and a burst of 50 calls costs one or two fsyncs, not 50.

Sealing (seq, prev_hash, hash) happens in the writer, in queue order, so the chain is gapless
whatever the batching. If a group fails to commit, every job in it and every job queued behind
it fails (their in-memory effects were built on the failed one) and `on_failure` tells the
runtime to reload its state from disk.

Reads: a separate read connection (WAL readers never block the writer), guarded by a lock so
any thread may read.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from edge.domain.model import Appointment, DomainEvent, Ticket, WindowState
from edge.events import GENESIS_HASH, seal_canonical
from edge.migrations import migrate

log = logging.getLogger(__name__)

# A side write run inside a group's transaction; built only by Store methods below.
Write = Callable[[sqlite3.Connection], Any]
Done = Callable[[list[dict[str, Any]] | None, BaseException | None], None]
TicketRow = tuple[str, str, str, str, str, str]


@dataclass
class StateRows:
    """Hall state serialised when the operation ran (memory moves on while the job waits)."""

    tickets: list[TicketRow] = field(default_factory=list)
    windows: list[tuple[int, str]] = field(default_factory=list)
    appointments: list[tuple[str, str, str]] = field(default_factory=list)
    meta: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, tickets: Iterable[Ticket] = (), windows: Iterable[WindowState] = (),
           appointments: Iterable[Appointment] = (),
           meta: dict[str, str] | None = None) -> StateRows:
        # orjson writes a dataclass's fields, datetimes in ISO form and enums by value: the
        # document to_doc() gives, ten times faster (this runs on the loop for every operation).
        dumps = orjson.dumps
        return cls(
            [(t.id, t.day, t.service, t.number, t.state.value, dumps(t).decode())
             for t in tickets],
            [(w.number, dumps(w).decode()) for w in windows],
            [(a.code, a.state.value, dumps(a).decode()) for a in appointments],
            list((meta or {}).items()))

    def extend(self, later: StateRows) -> None:
        """Add a later operation's rows (written after these; a later row of the same
        ticket or window replaces the earlier one)."""
        self.tickets += later.tickets
        self.windows += later.windows
        self.appointments += later.appointments
        if later.meta:
            keys = {k for k, _ in later.meta}
            self.meta = [m for m in self.meta if m[0] not in keys] + later.meta

    def __bool__(self) -> bool:
        return bool(self.tickets or self.windows or self.appointments or self.meta)


@dataclass
class Job:
    events: list[DomainEvent]
    now: datetime
    state: StateRows
    writes: list[Write]
    done: Done


class WriterStopped(RuntimeError):
    pass


class Store:
    def __init__(self, path: str | Path, *, site: str, box: str, max_batch: int = 512) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.site, self.box = site, box
        self.max_batch = max_batch
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
        self._wdb = self._connect()
        self.applied_migrations = migrate(self._wdb)
        self._rdb = self._connect()
        self._rlock = threading.Lock()
        self._load_head()
        self.on_failure: Callable[[BaseException], None] | None = None
        self.stats = {"groups": 0, "jobs": 0, "largest_group": 0}
        self.last_commit_at = time.monotonic()  # the watchdog asks whether the writer lives
        self.busy_since: float | None = None  # when the group being written began
        self._q: queue.SimpleQueue[Job | Callable[[], None] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(timeout=30)
        self._wdb.close()
        self._rdb.close()

    def writer_alive(self) -> bool:
        return self._thread.is_alive()

    def writer_responsive(self, max_stall: float) -> bool:
        """For the watchdog: the writer lives and no group has been stuck for
        `max_stall` seconds (a hung disk or a lock never released)."""
        busy = self.busy_since
        return self._thread.is_alive() and (busy is None
                                            or time.monotonic() - busy < max_stall)

    def _load_head(self) -> None:
        row = self._wdb.execute(
            "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        self.head_seq, self.head_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)

    # ---- the write path ------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a job; `job.done` is called from the writer thread once it is durable."""
        if self._closed:
            raise WriterStopped("the store is closed")
        self._q.put(job)

    def write(self, *writes: Write) -> Future[Any]:
        """Queue side writes (no events); the future resolves to the last write's result."""
        fut: Future[Any] = Future()
        results: list[Any] = []

        def capture(db: sqlite3.Connection) -> None:
            results.clear()
            for w in writes:
                results.append(w(db))

        def done(_s: list[dict[str, Any]] | None, exc: BaseException | None) -> None:
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(results[-1] if results else None)

        self.submit(Job([], datetime.now().astimezone(), StateRows(), [capture], done))
        return fut

    def write_sync(self, *writes: Write, timeout: float = 30.0) -> Any:
        return self.write(*writes).result(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything queued before this call is on disk (tests, shutdown)."""
        if not self._closed:
            self.write_sync(lambda _db: None, timeout=timeout)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch: list[Job] = [first] if isinstance(first, Job) else []
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, Job):
                    batch.append(nxt)
            if batch:
                self.busy_since = time.monotonic()  # a stuck group shows
                try:
                    self._commit_group(batch)
                finally:
                    self.busy_since = None
            if stop:
                return

    def _commit_group(self, batch: list[Job]) -> None:
        db = self._wdb
        seq, prev = self.head_seq, self.head_hash
        sealed_per_job: list[list[dict[str, Any]]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Rows of the whole group go in one executemany per table, not one call into
                # sqlite per row and table (the writer holds the GIL against the loop), in job
                # order, written before any job's own writes run and at the end.
                journal: list[tuple[Any, ...]] = []
                outbox: list[tuple[int, str]] = []
                tickets: list[Any] = []
                windows: list[Any] = []
                appointments: list[Any] = []
                meta: list[Any] = []

                def put() -> None:
                    for sql, rows in (
                            ("INSERT INTO journal(seq, id, ts, type, prev_hash, hash, envelope)"
                             " VALUES (?,?,?,?,?,?,?)", journal),
                            ("INSERT INTO outbox(seq, queued_at) VALUES (?, ?)", outbox),
                            ("INSERT OR REPLACE INTO tickets(id, day, service, number, state,"
                             " doc) VALUES (?,?,?,?,?,?)", tickets),
                            ("INSERT OR REPLACE INTO windows(number, doc) VALUES (?, ?)",
                             windows),
                            ("INSERT OR REPLACE INTO appointments(code, state, doc)"
                             " VALUES (?,?,?)", appointments),
                            ("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta)):
                        if rows:
                            db.executemany(sql, rows)
                            rows.clear()

                for job in batch:
                    sealed: list[dict[str, Any]] = []
                    for ev in job.events:
                        seq += 1
                        env, text = seal_canonical(seq=seq, ts=job.now, site=self.site,
                                                   box=self.box, type_=ev.type, data=ev.data,
                                                   prev_hash=prev)
                        journal.append((seq, env["id"], env["ts"], env["type"], prev,
                                        env["hash"], text.decode("utf-8")))
                        outbox.append((seq, env["ts"]))
                        prev = env["hash"]
                        sealed.append(env)
                    st = job.state
                    tickets += st.tickets
                    windows += st.windows
                    appointments += st.appointments
                    meta += st.meta
                    if job.writes:
                        put()
                        for w in job.writes:
                            w(db)
                    sealed_per_job.append(sealed)
                put()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except BaseException as exc:
            log.error("store: a group of %d operations failed to commit: %s", len(batch), exc)
            failed = list(batch)
            # Everything queued behind was computed on top of the failed group's memory.
            while True:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                if isinstance(nxt, Job):
                    failed.append(nxt)
            self._load_head()
            if self.on_failure is not None:
                try:
                    self.on_failure(exc)
                except Exception:
                    log.exception("store: the failure handler failed")
            for job in failed:
                _answer(job, None, exc)
            return
        self.head_seq, self.head_hash = seq, prev
        self.last_commit_at = time.monotonic()
        self.stats["groups"] += 1
        self.stats["jobs"] += len(batch)
        self.stats["largest_group"] = max(self.stats["largest_group"], len(batch))
        for job, sealed in zip(batch, sealed_per_job, strict=True):
            _answer(job, sealed, None)

    # ---- reads -----------------------------------------------------------------------------
    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._rlock:
            return self._rdb.execute(sql, tuple(args)).fetchall()

    def _read_one(self, sql: str, args: Iterable[Any] = ()) -> Any:
        with self._rlock:
            return self._rdb.execute(sql, tuple(args)).fetchone()

    def meta(self, key: str) -> str | None:
        row = self._read_one("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else None

    def load_tickets(self, day: str) -> list[Ticket]:
        rows = self._read("SELECT doc FROM tickets WHERE day=?", (day,))
        return [Ticket.from_doc(json.loads(r[0])) for r in rows]

    def load_windows(self) -> list[WindowState]:
        return [WindowState.from_doc(json.loads(r[0]))
                for r in self._read("SELECT doc FROM windows")]

    def load_open_appointments(self) -> list[Appointment]:
        rows = self._read("SELECT doc FROM appointments WHERE state='booked'")
        return [Appointment.from_doc(json.loads(r[0])) for r in rows]

    def events_after(self, after_seq: int, limit: int,
                     types: list[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT envelope FROM journal WHERE seq > ?"
        args: list[Any] = [after_seq]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            args += types
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [json.loads(r[0]) for r in self._read(sql, args)]

    def events_since_day_opened(self, types: list[str]) -> list[dict[str, Any]]:
        """Events of these types from the last `day.opened` on (today's, for restores)."""
        row = self._read_one("SELECT max(seq) FROM journal WHERE type='day.opened'")
        after = max(0, (row[0] or 1) - 1)
        return self.events_after(after, 10**9, types)

    def journal_of_type_since(self, type_: str, after_seq: int,
                              since_day: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """(seq, ts, envelope) of one type after a seq, journalled on or after a date."""
        rows = self._read(
            "SELECT seq, ts, envelope FROM journal WHERE type = ? AND seq > ?"
            " AND substr(ts, 1, 10) >= ? ORDER BY seq", (type_, after_seq, since_day))
        for seq, ts, env in rows:
            yield seq, ts, json.loads(env)

    def iter_journal(self, batch: int = 5000) -> Iterator[tuple[int, str, str, str]]:
        """(seq, prev_hash, hash, envelope) in seq order, for the verifier."""
        after = 0
        while True:
            rows = self._read("SELECT seq, prev_hash, hash, envelope FROM journal WHERE seq > ?"
                              " ORDER BY seq LIMIT ?", (after, batch))
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def outbox_pending(self) -> int:
        return int(self._read_one("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0])

    # ---- the outbox (the MQTT link) ---------------------------------------------------------
    # The envelope as its UTF-8 bytes, as the link publishes it (no decode and re-encode).
    def outbox_unsent(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """(seq, type, envelope bytes) of unsent rows after a seq, oldest first."""
        return self._read(
            "SELECT o.seq, j.type, CAST(j.envelope AS BLOB) FROM outbox o"
            " JOIN journal j ON j.seq = o.seq"
            " WHERE o.sent_at IS NULL AND o.seq > ? ORDER BY o.seq LIMIT ?", (after_seq, limit))

    def journal_range(self, from_seq: int, to_seq: int,
                      limit: int) -> list[tuple[int, str, bytes]]:
        """(seq, type, envelope bytes) of journal rows in a seq range (replays)."""
        return self._read("SELECT seq, type, CAST(envelope AS BLOB) FROM journal"
                          " WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                          (from_seq, to_seq, limit))

    def outbox_lowest_unsent(self) -> int | None:
        row = self._read_one("SELECT min(seq) FROM outbox WHERE sent_at IS NULL")
        return row[0] if row and row[0] is not None else None

    def outbox_lowest_unsent_from(self, seq: int) -> int | None:
        row = self._read_one("SELECT min(seq) FROM outbox WHERE seq >= ?", (seq,))
        return row[0] if row and row[0] is not None else None

    def outbox_backlog(self) -> tuple[int, int, str | None]:
        """(unsent rows, their envelope bytes, the oldest queued_at)."""
        n, size, oldest = self._read_one(
            "SELECT count(*), coalesce(sum(length(j.envelope)), 0), min(o.queued_at)"
            " FROM outbox o JOIN journal j ON j.seq = o.seq WHERE o.sent_at IS NULL")
        return int(n), int(size), oldest

    @staticmethod
    def mark_sent(seqs: list[int], at: str) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE outbox SET sent_at=? WHERE seq=? AND sent_at IS NULL",
                           [(at, s) for s in seqs])
        return w

    @staticmethod
    def put_meta(key: str, value: str) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
        return w

    # ---- central commands seen -------------------------------------------------------------
    @staticmethod
    def claim_command(cmd_id: str, name: str, issued_epoch: int, received_at: str) -> Write:
        """Record a command id; the write's result is the name it was first seen with, or None."""
        def w(db: sqlite3.Connection) -> str | None:
            seen = db.execute("SELECT name FROM link_commands_seen WHERE id=?",
                              (cmd_id,)).fetchone()
            if seen is None:
                db.execute("INSERT INTO link_commands_seen VALUES (?,?,?,?)",
                           (cmd_id, name, issued_epoch, received_at))
                return None
            return str(seen[0])
        return w

    @staticmethod
    def prune_commands(horizon_epoch: int) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM link_commands_seen WHERE issued_epoch < ?", (horizon_epoch,))
        return w

    # ---- staff sessions and kiosk idempotency (the API) --------------------------------------
    def session(self, token_sha256: str) -> tuple[str, int, str] | None:
        row = self._read_one("SELECT staff, window, expires_at FROM sessions"
                             " WHERE token_sha256=?", (token_sha256,))
        return (str(row[0]), int(row[1]), str(row[2])) if row else None

    @staticmethod
    def open_session(token_sha256: str, staff: str, window: int, expires_at: str) -> Write:
        """One session per staff member and per window: a new login replaces both."""
        def w(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE staff=? OR window=?", (staff, window))
            db.execute("INSERT INTO sessions VALUES (?,?,?,?)",
                       (token_sha256, staff, window, expires_at))
        return w

    @staticmethod
    def end_window_sessions(window: int) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE window=?", (window,))
        return w

    @staticmethod
    def end_all_sessions() -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions")
        return w

    def idempotent_ticket(self, key: str) -> tuple[str, str | None] | None:
        """(ticket id, request digest) a key answered before, or None."""
        row = self._read_one("SELECT ticket, request_sha256 FROM idempotency WHERE key=?",
                             (key,))
        return (str(row[0]), row[1]) if row else None

    @staticmethod
    def remember_idempotency(key: str, ticket: str, created_at: str,
                             request_sha256: str) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO idempotency(key, ticket, created_at, request_sha256)"
                       " VALUES (?,?,?,?)", (key, ticket, created_at, request_sha256))
        return w

    def paired_device(self, token_sha256: str) -> tuple[str, str, int | None] | None:
        """name, kind and window of the paired device holding this token's digest."""
        row = self._read_one("SELECT name, kind, window FROM paired_devices"
                             " WHERE token_sha256=?", (token_sha256,))
        return (str(row[0]), str(row[1]), row[2]) if row else None

    def paired_devices(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT name, kind, window, paired_at, paired_by"
                          " FROM paired_devices ORDER BY name")
        return [{"name": r[0], "kind": r[1], "window": r[2], "paired_at": r[3],
                 "paired_by": r[4]} for r in rows]

    @staticmethod
    def pair_device(name: str, kind: str, window: int | None, token_sha256: str,
                    paired_at: str, by: str) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO paired_devices VALUES (?,?,?,?,?,?)",
                       (name, kind, window, token_sha256, paired_at, by))
        return w

    @staticmethod
    def unpair_device(name: str) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM paired_devices WHERE name=?", (name,))
        return w

    # ---- attendance terminals and fingerprint sensors ---------------------------------------
    def punch_seen(self, key: tuple[str, str, str, int, int]) -> bool:
        return self._read_one(
            "SELECT 1 FROM attendance_seen WHERE terminal=? AND user_id=? AND at=?"
            " AND status=? AND punch=?", key) is not None

    @staticmethod
    def remember_punches(keys: list[tuple[str, str, str, int, int]]) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO attendance_seen VALUES (?,?,?,?,?)", keys)
        return w

    def fingerprint_pages(self, sensor: str) -> dict[int, str]:
        rows = self._read("SELECT page, staff FROM fingerprint_templates WHERE sensor=?",
                          (sensor,))
        return {int(p): str(s) for p, s in rows}

    @staticmethod
    def remember_template(sensor: str, page: int, staff: str, enrolled_at: str) -> Write:
        def w(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO fingerprint_templates VALUES (?,?,?,?)",
                       (sensor, page, staff, enrolled_at))
        return w

    # ---- video segments and clips (tables: migration 5) ----------------------------
    def video_add_segments(self, rows: Iterable[tuple[str, float, float, str, int]]) -> None:
        """(camera, start, end, path, bytes); a path already indexed is left as it is."""
        batch = list(rows)

        def w(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR IGNORE INTO video_segments(camera, start, end, path, bytes)"
                           " VALUES (?,?,?,?,?)", batch)
        self.write_sync(w)

    def video_ticket(self, ticket_id: str) -> Ticket | None:
        """Any day's ticket (the clip of an earlier day's service)."""
        row = self._read_one("SELECT doc FROM tickets WHERE id=?", (ticket_id,))
        return Ticket.from_doc(json.loads(row[0])) if row else None

    def video_segment_paths(self, camera: str) -> set[str]:
        return {r[0] for r in self._read("SELECT path FROM video_segments WHERE camera=?",
                                         (camera,))}

    def video_segment_ids(self, paths: list[str]) -> list[int]:
        out: list[int] = []
        for i in range(0, len(paths), 500):
            chunk = paths[i:i + 500]
            out += [r[0] for r in self._read(
                f"SELECT id FROM video_segments WHERE path IN ({','.join('?' * len(chunk))})",
                chunk)]
        return out

    def video_last_segment(self, camera: str) -> tuple[float, float, str] | None:
        row = self._read_one("SELECT start, end, path FROM video_segments WHERE camera=?"
                             " ORDER BY end DESC LIMIT 1", (camera,))
        return (row[0], row[1], row[2]) if row else None

    def video_segments_between(self, camera: str, start: float,
                               end: float) -> list[tuple[float, float, str, int]]:
        """Segments overlapping [start, end], oldest first: (start, end, path, bytes)."""
        return [(r[0], r[1], r[2], r[3]) for r in self._read(
            "SELECT start, end, path, bytes FROM video_segments WHERE camera=? AND end>? "
            "AND start<? ORDER BY start", (camera, start, end))]

    def video_oldest_segments(self, limit: int) -> list[tuple[int, str, float, int]]:
        """Across cameras, oldest first: (id, path, end, bytes)."""
        return [(r[0], r[1], r[2], r[3]) for r in self._read(
            "SELECT id, path, end, bytes FROM video_segments ORDER BY start LIMIT ?", (limit,))]

    def video_total_bytes(self) -> int:
        return int(self._read_one("SELECT coalesce(sum(bytes), 0) FROM video_segments")[0])

    def video_delete_segments(self, ids: list[int]) -> None:
        def w(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM video_segments WHERE id=?", [(i,) for i in ids])
        self.write_sync(w)

    def video_add_clip(self, clip_id: str, camera: str, start: float, end: float, path: str,
                       size: int, ticket: str | None, created_at: float,
                       expires_at: float) -> None:
        row = (clip_id, camera, start, end, path, size, ticket, created_at, expires_at)
        self.write_sync(lambda db: db.execute(
            "INSERT INTO video_clips VALUES (?,?,?,?,?,?,?,?,?)", row))

    def video_clip(self, clip_id: str) -> dict[str, Any] | None:
        row = self._read_one("SELECT id, camera, start, end, path, bytes, ticket, created_at,"
                             " expires_at FROM video_clips WHERE id=?", (clip_id,))
        if row is None:
            return None
        keys = ("id", "camera", "start", "end", "path", "bytes", "ticket", "created_at",
                "expires_at")
        return dict(zip(keys, row, strict=True))

    def video_expired_clips(self, now: float) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._read(
            "SELECT id, path FROM video_clips WHERE expires_at < ?", (now,))]

    def video_delete_clip(self, clip_id: str) -> None:
        self.write_sync(lambda db: db.execute("DELETE FROM video_clips WHERE id=?", (clip_id,)))


    # ---- supervision: reads only; its state lives in the journal -------------------
    def journal_of_types(self, types: Iterable[str], since_ts: str | None = None,
                         until_ts: str | None = None,
                         always: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Envelopes of `types` with since_ts <= ts < until_ts (text order: the box writes one
        UTC offset), plus every envelope of the `always` types; in seq order."""
        ts, every = list(types), list(always)
        sql = f"SELECT envelope FROM journal WHERE (type IN ({','.join('?' * len(ts))})"
        args: list[Any] = list(ts)
        if since_ts is not None:
            sql += " AND ts >= ?"
            args.append(since_ts)
        if until_ts is not None:
            sql += " AND ts < ?"
            args.append(until_ts)
        sql += ")"
        if every:
            sql += f" OR type IN ({','.join('?' * len(every))})"
            args += every
        sql += " ORDER BY seq"
        return [json.loads(r[0]) for r in self._read(sql, args)]

    def first_event_ts(self) -> str | None:
        """When the box recorded its first event (days before it are not judged)."""
        row = self._read_one("SELECT ts FROM journal ORDER BY seq LIMIT 1")
        return row[0] if row else None


def _answer(job: Job, sealed: list[dict[str, Any]] | None, exc: BaseException | None) -> None:
    try:
        job.done(sealed, exc)
    except Exception:
        log.exception("store: a caller's completion failed")


class JournalFile:
    """Read-only access to a box database file for offline tools (verify, doctor, backups)."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)

    def close(self) -> None:
        self.db.close()

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def journal_rows(self, batch: int = 5000) -> Iterator[tuple[int, str, str, str, str, str,
                                                                 str]]:
        """(seq, id, ts, type, prev_hash, hash, envelope) in seq order."""
        after = -1
        while True:
            rows = self.db.execute(
                "SELECT seq, id, ts, type, prev_hash, hash, envelope FROM journal WHERE seq > ?"
                " ORDER BY seq LIMIT ?", (after, batch)).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def video_segments(self) -> list[tuple[str, float, float]]:
        """(camera, start, end) of every indexed recording segment (the soak's coverage check)."""
        rows = self.db.execute("SELECT camera, start, end FROM video_segments ORDER BY start")
        return [(r[0], float(r[1]), float(r[2])) for r in rows.fetchall()]

    def outbox_seq_from(self, seq: int) -> int | None:
        """The lowest outbox seq at or above `seq` (the outbox outlives removed journal rows)."""
        row = self.db.execute("SELECT min(seq) FROM outbox WHERE seq >= ?", (seq,)).fetchone()
        return row[0] if row and row[0] is not None else None
