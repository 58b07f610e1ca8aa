"""The store's schema, as ordered migrations. `PRAGMA user_version` says which have run.

Migration 1 is the schema main had before versioning (user_version 0), written with
`IF NOT EXISTS` so that such a database upgrades in place: its tables are kept as they are and
only what is missing is created. Every later migration is applied exactly once, in order, each in
its own transaction together with the new user_version, so a crash mid-upgrade leaves the
database at the last complete version.

Adding a migration: append a new entry; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

BASELINE = """
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
-- Command ids from the central room, so a replayed command is refused.
CREATE TABLE IF NOT EXISTS link_commands_seen (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    issued_epoch INTEGER NOT NULL,
    received_at  TEXT NOT NULL
);
-- Punches already journalled, so a terminal's stored log read again records nothing twice.
CREATE TABLE IF NOT EXISTS attendance_seen (
    terminal TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    at       TEXT NOT NULL,
    status   INTEGER NOT NULL,
    punch    INTEGER NOT NULL,
    PRIMARY KEY (terminal, user_id, at, status, punch)
) WITHOUT ROWID;
-- Which staff member's finger is stored on which page of a window sensor's library.
CREATE TABLE IF NOT EXISTS fingerprint_templates (
    sensor      TEXT NOT NULL,
    page        INTEGER NOT NULL,
    staff       TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    PRIMARY KEY (sensor, page)
);
"""

# Each entry: (version, what it does, SQL). Versions are 1, 2, 3 ... without gaps.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "baseline: journal, outbox, hall state, sessions, idempotency, link, devices", BASELINE),
    (2, "idempotency keys remember the request they answered, so a reuse with another body "
        "is refused",
     "ALTER TABLE idempotency ADD COLUMN request_sha256 TEXT;"),
    (3, "the journal is read by type from a seq on (board restore, rating restore, pulls)",
     "CREATE INDEX IF NOT EXISTS journal_type_seq ON journal(type, seq);"),
    (4, "kiosks and window consoles paired by a manager: the device keeps its token, the box "
        "its digest",
     """CREATE TABLE IF NOT EXISTS paired_devices (
    name         TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    window       INTEGER,
    token_sha256 TEXT NOT NULL UNIQUE,
    paired_at    TEXT NOT NULL,
    paired_by    TEXT NOT NULL
);"""),
    (5, "video: recorded segments and exported clips of the window cameras", """
CREATE TABLE video_segments (
    id     INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    start  REAL NOT NULL,         -- Unix epoch seconds: cut at keyframes, not whole seconds
    end    REAL NOT NULL,
    path   TEXT NOT NULL UNIQUE,  -- relative to the recording folder
    bytes  INTEGER NOT NULL
);
CREATE INDEX video_segments_camera_start ON video_segments(camera, start);
CREATE INDEX video_segments_start ON video_segments(start);
CREATE TABLE video_clips (
    id         TEXT PRIMARY KEY,
    camera     TEXT NOT NULL,
    start      REAL NOT NULL,
    end        REAL NOT NULL,
    path       TEXT NOT NULL,     -- relative to the recording folder
    bytes      INTEGER NOT NULL,
    ticket     TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""),
]

LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(Exception):
    """The database was written by a newer hallbox; refusing beats corrupting it."""


def migrate(db: sqlite3.Connection) -> list[int]:
    """Bring the database to LATEST; return the versions applied. `db` is in autocommit mode."""
    current = int(db.execute("PRAGMA user_version").fetchone()[0])
    if current > LATEST:
        raise SchemaTooNew(f"database schema version {current} is newer than this hallbox "
                           f"knows ({LATEST}); upgrade hallbox or restore a backup")
    applied = []
    for version, _what, sql in MIGRATIONS:
        if version <= current:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(sql):
                db.execute(stmt)
            db.execute(f"PRAGMA user_version = {int(version)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(version)
    return applied


def _statements(sql: str) -> list[str]:
    """Split a script into statements (sqlite3's executescript would commit on its own)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
