"""SQLite store: hall state, the append-only journal and the outbox, written in one transaction.

WAL mode with synchronous=FULL: a commit is on disk before the API answers 2xx, so neither a
process crash nor a power cut loses an acknowledged event.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.domain.model import Appointment, DomainEvent, Ticket, WindowState
from edge.events import GENESIS_HASH, canonical_json, seal

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq       INTEGER PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    ts        TEXT NOT NULL,
    type      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    envelope  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_type ON journal(type);
-- The journal is append-only: the database itself refuses edits and deletes.
CREATE TRIGGER IF NOT EXISTS journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TABLE IF NOT EXISTS outbox (
    seq       INTEGER PRIMARY KEY REFERENCES journal(seq),
    queued_at TEXT NOT NULL,
    sent_at   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS tickets (
    id      TEXT PRIMARY KEY,
    day     TEXT NOT NULL,
    service TEXT NOT NULL,
    number  TEXT NOT NULL,
    state   TEXT NOT NULL,
    doc     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_day ON tickets(day);
CREATE TABLE IF NOT EXISTS windows (number INTEGER PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS appointments (
    code  TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    doc   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    staff        TEXT NOT NULL,
    window       INTEGER NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- A kiosk that lost the answer retries with the same Idempotency-Key and gets the same ticket.
CREATE TABLE IF NOT EXISTS idempotency (
    key        TEXT PRIMARY KEY,
    ticket     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class StoreError(Exception):
    pass


class Store:
    def __init__(self, path: str | Path, *, site: str, box: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.site, self.box = site, box
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, one writer at a time.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._load_head()

    def close(self) -> None:
        self.db.close()

    def _load_head(self) -> None:
        row = self.db.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        self.head_seq, self.head_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            self._load_head()
            raise
        else:
            self.db.execute("COMMIT")

    # ---- the one write path ------------------------------------------------------------------
    def commit(
        self,
        events: Iterable[DomainEvent],
        *,
        now: datetime,
        tickets: Iterable[Ticket] = (),
        windows: Iterable[WindowState] = (),
        appointments: Iterable[Appointment] = (),
        meta: dict[str, str] | None = None,
        extra: Any = None,
    ) -> list[dict[str, Any]]:
        """Write state, journal and outbox atomically; return the sealed envelopes.

        `extra` is a callable run inside the same transaction for side tables (sessions).
        """
        sealed: list[dict[str, Any]] = []
        seq, prev = self.head_seq, self.head_hash
        with self.transaction() as db:
            for ev in events:
                seq += 1
                env = seal(seq=seq, ts=now, site=self.site, box=self.box, type_=ev.type,
                           data=ev.data, prev_hash=prev)
                db.execute(
                    "INSERT INTO journal(seq, id, ts, type, prev_hash, hash, envelope)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (seq, env["id"], env["ts"], env["type"], prev, env["hash"],
                     canonical_json(env).decode("utf-8")))
                db.execute("INSERT INTO outbox(seq, queued_at) VALUES (?, ?)", (seq, env["ts"]))
                prev = env["hash"]
                sealed.append(env)
            for t in tickets:
                db.execute(
                    "INSERT OR REPLACE INTO tickets(id, day, service, number, state, doc)"
                    " VALUES (?,?,?,?,?,?)",
                    (t.id, t.day, t.service, t.number, t.state.value, json.dumps(t.to_doc())))
            for w in windows:
                db.execute("INSERT OR REPLACE INTO windows(number, doc) VALUES (?, ?)",
                           (w.number, json.dumps(w.to_doc())))
            for a in appointments:
                db.execute("INSERT OR REPLACE INTO appointments(code, state, doc) VALUES (?,?,?)",
                           (a.code, a.state.value, json.dumps(a.to_doc())))
            for k, v in (meta or {}).items():
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
            if extra is not None:
                extra(db)
        self.head_seq, self.head_hash = seq, prev
        return sealed

    # ---- reads ---------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def load_tickets(self, day: str) -> list[Ticket]:
        rows = self.db.execute("SELECT doc FROM tickets WHERE day=?", (day,))
        return [Ticket.from_doc(json.loads(r[0])) for r in rows]

    def load_windows(self) -> list[WindowState]:
        return [WindowState.from_doc(json.loads(r[0]))
                for r in self.db.execute("SELECT doc FROM windows")]

    def load_open_appointments(self) -> list[Appointment]:
        rows = self.db.execute("SELECT doc FROM appointments WHERE state='booked'")
        return [Appointment.from_doc(json.loads(r[0])) for r in rows]

    def ticket_doc(self, ticket_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT doc FROM tickets WHERE id=?", (ticket_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def events_after(self, after_seq: int, limit: int,
                     types: list[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT envelope FROM journal WHERE seq > ?"
        args: list[Any] = [after_seq]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            args += types
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [json.loads(r[0]) for r in self.db.execute(sql, args)]

    def outbox_pending(self) -> int:
        return int(self.db.execute(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])
