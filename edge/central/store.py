"""Where the central room keeps every box's events: PostgreSQL, or SQLite for a trial.

Events are deduplicated on (site, box, seq). Each event's own hash is recomputed, and its link
to its neighbours (prev_hash of seq+1 == hash of seq) is checked as it arrives, in whichever
order the events come; a per-box lock (PostgreSQL advisory lock; SQLite has one writer) makes
two ingest processes see each other's neighbours. Breaks are kept in `chain_breaks`, never
repaired silently.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.events import ENVELOPE_FIELDS, GENESIS_HASH, canonical_json, event_hash

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS events (
        site TEXT NOT NULL, box TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL,
        type TEXT NOT NULL, ts TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        envelope TEXT NOT NULL, received_at TEXT NOT NULL, ingest TEXT NOT NULL,
        PRIMARY KEY (site, box, seq))""",
    """CREATE TABLE IF NOT EXISTS boxes (
        site TEXT NOT NULL, box TEXT NOT NULL, online BOOLEAN NOT NULL DEFAULT FALSE,
        boot BIGINT NOT NULL DEFAULT 0, head_seq BIGINT NOT NULL DEFAULT 0,
        head_hash TEXT, delivered_upto BIGINT NOT NULL DEFAULT 0,
        contiguous_upto BIGINT NOT NULL DEFAULT 0, status_at TEXT,
        PRIMARY KEY (site, box))""",
    """CREATE TABLE IF NOT EXISTS chain_breaks (
        site TEXT NOT NULL, box TEXT NOT NULL, seq BIGINT NOT NULL, reason TEXT NOT NULL,
        detail TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (site, box, seq, reason))""",
    """CREATE TABLE IF NOT EXISTS replay_requests (
        site TEXT NOT NULL, box TEXT NOT NULL, from_seq BIGINT NOT NULL,
        to_seq BIGINT NOT NULL, requested_epoch BIGINT NOT NULL, PRIMARY KEY (site, box))""",
]


@dataclass
class InsertResult:
    stored: int = 0
    duplicates: int = 0
    breaks: list[tuple[str, str, int, str, str]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CentralStore:
    """One connection; use one per process (or thread)."""

    def __init__(self, dsn: str, *, ingest: str = "-") -> None:
        self.dsn = dsn
        self.ingest = ingest  # which process stored an event (load split, forensics)
        self._connect()

    def reconnect(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass
        self._connect()

    def _connect(self) -> None:
        dsn = self.dsn
        self.pg = dsn.startswith(("postgresql://", "postgres://")) or "dbname=" in dsn
        if self.pg:
            import psycopg

            self.conn: Any = psycopg.connect(dsn, autocommit=False, connect_timeout=10)
        else:
            path = dsn.removeprefix("sqlite:///").removeprefix("sqlite://")
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
        self._begin()
        for stmt in SCHEMA:
            self._x(stmt)
        self._commit()

    # ---- tiny portability layer ------------------------------------------------------------
    def _sql(self, q: str) -> str:
        return q.replace("?", "%s") if self.pg else q

    def _x(self, q: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self._sql(q), tuple(args))

    def _begin(self) -> None:
        if not self.pg:
            self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.conn.execute("COMMIT") if not self.pg else self.conn.commit()

    def _rollback(self) -> None:
        self.conn.execute("ROLLBACK") if not self.pg else self.conn.rollback()

    def close(self) -> None:
        self.conn.close()

    def _lock_box(self, site: str, box: str) -> None:
        if self.pg:
            self._x("SELECT pg_advisory_xact_lock(hashtext(?))", (f"{site}/{box}",))

    def _break(self, res: InsertResult, site: str, box: str, seq: int, reason: str,
               detail: str) -> None:
        q = ("INSERT INTO chain_breaks VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING")
        self._x(q, (site, box, seq, reason, detail, _now()))
        res.breaks.append((site, box, seq, reason, detail))

    # ---- events ------------------------------------------------------------------------------
    def insert(self, envelopes: Iterable[dict[str, Any]]) -> InsertResult:
        """Store a batch: per box one read of the rows around it, one multi-row insert."""
        res = InsertResult()
        by_box: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for env in envelopes:
            site, box, seq = env["site"], env["box"], int(env["seq"])
            if event_hash(env) != env["hash"]:
                res.breaks.append((site, box, seq, "bad-hash",
                                   "the event's hash does not match its content"))
                continue
            batch = by_box.setdefault((site, box), {})
            if seq in batch:  # the same seq twice in one batch
                if (batch[seq]["id"], batch[seq]["hash"]) == (env["id"], env["hash"]):
                    res.duplicates += 1
                else:
                    res.breaks.append((site, box, seq, "seq-conflict",
                                       f"seq {seq} arrived again as a different event"))
                continue
            batch[seq] = env
        noted = list(res.breaks)
        res.breaks = []
        self._begin()
        try:
            for site, box, seq, reason, detail in noted:
                self._break(res, site, box, seq, reason, detail)
            for (site, box) in sorted(by_box):
                self._insert_box(res, site, box, by_box[(site, box)])
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return res

    def _insert_box(self, res: InsertResult, site: str, box: str,
                    batch: dict[int, dict[str, Any]]) -> None:
        self._lock_box(site, box)
        wanted = sorted({n for s in batch for n in (s - 1, s, s + 1) if n >= 1})
        held: dict[int, tuple[str, str, str]] = {}  # seq -> (id, hash, prev_hash)
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            rows = self._x(
                "SELECT seq, id, hash, prev_hash FROM events WHERE site=? AND box=? AND seq IN ("
                + ",".join("?" * len(part)) + ")", (site, box, *part)).fetchall()
            held.update({int(r[0]): (r[1], r[2], r[3]) for r in rows})
        new: list[dict[str, Any]] = []
        for seq in sorted(batch):
            env = batch[seq]
            if seq in held:
                if held[seq][:2] == (env["id"], env["hash"]):
                    res.duplicates += 1
                else:
                    self._break(res, site, box, seq, "seq-conflict",
                                f"seq {seq} arrived again as a different event {env['id']}")
                continue
            new.append(env)
            held[seq] = (env["id"], env["hash"], env["prev_hash"])
        now = _now()
        if new:
            rows = [
                (site, box, e["seq"], e["id"], e["type"], e["ts"], e["prev_hash"], e["hash"],
                 canonical_json(e).decode("utf-8"), now, self.ingest) for e in new]
            q = self._sql("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)")
            if self.pg:
                with self.conn.cursor() as cur:
                    cur.executemany(q, rows)
            else:
                self.conn.executemany(q, rows)
            res.stored += len(new)
        new_seqs = {int(e["seq"]) for e in new}
        for env in new:
            seq = int(env["seq"])
            if seq == 1 and env["prev_hash"] != GENESIS_HASH:
                self._break(res, site, box, seq, "prev-mismatch",
                            "seq 1 must follow the genesis hash")
            prev = held.get(seq - 1)
            if prev is not None and prev[1] != env["prev_hash"]:
                self._break(res, site, box, seq, "prev-mismatch",
                            f"prev_hash does not match the hash of seq {seq - 1}")
            nxt = held.get(seq + 1)
            # A successor new in this batch checks the pair itself (above).
            if nxt is not None and (seq + 1) not in new_seqs and nxt[2] != env["hash"]:
                self._break(res, site, box, seq + 1, "prev-mismatch",
                            f"prev_hash does not match the hash of seq {seq}")

    # ---- status (birth, Will, periodic) ---------------------------------------------------
    def status(self, site: str, box: str, st: dict[str, Any]) -> InsertResult:
        """Apply a retained status; a Will from an older boot never overrides a newer birth."""
        res = InsertResult()
        boot = int(st.get("boot", 0))
        online = bool(st.get("online"))
        head = st.get("head") or {}
        self._begin()
        try:
            self._lock_box(site, box)
            self._x("INSERT INTO boxes(site, box) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (site, box))
            cur = self._x("SELECT boot FROM boxes WHERE site=? AND box=?", (site, box)).fetchone()
            if boot >= int(cur[0]):
                self._x("UPDATE boxes SET online=?, boot=?, status_at=? WHERE site=? AND box=?",
                        (online, boot, _now(), site, box))
            if isinstance(head.get("seq"), int) and isinstance(head.get("hash"), str):
                hs = int(head["seq"])
                self._x("UPDATE boxes SET head_seq=?, head_hash=? WHERE site=? AND box=?"
                        " AND head_seq <= ?", (hs, head["hash"], site, box, hs))
                row = self._x("SELECT hash FROM events WHERE site=? AND box=? AND seq=?",
                              (site, box, hs)).fetchone()
                if row is not None and row[0] != head["hash"]:
                    self._break(res, site, box, hs, "head-mismatch",
                                "the box's announced head differs from the stored event")
            du = st.get("delivered_upto")
            if isinstance(du, int):
                self._x("UPDATE boxes SET delivered_upto=? WHERE site=? AND box=?"
                        " AND delivered_upto < ?", (du, site, box, du))
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return res

    # ---- gaps --------------------------------------------------------------------------------
    def find_gaps(self) -> list[tuple[str, str, int, int]]:
        """Advance each box's contiguous prefix; return (site, box, from, to) holes below what
        the box says it delivered or what we already hold."""
        gaps: list[tuple[str, str, int, int]] = []
        self._begin()
        try:
            for site, box in self._x(
                    "SELECT site, box FROM events GROUP BY site, box").fetchall():
                self._x("INSERT INTO boxes(site, box) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        (site, box))
            boxes = self._x("SELECT site, box, contiguous_upto, delivered_upto FROM boxes"
                            ).fetchall()
            for site, box, upto, delivered in boxes:
                upto = int(upto)
                while True:
                    rows = self._x("SELECT seq FROM events WHERE site=? AND box=? AND seq > ?"
                                   " ORDER BY seq LIMIT 5000", (site, box, upto)).fetchall()
                    advanced = False
                    for (s,) in rows:
                        if int(s) != upto + 1:
                            break
                        upto += 1
                        advanced = True
                    if not advanced or len(rows) < 5000:
                        break
                self._x("UPDATE boxes SET contiguous_upto=? WHERE site=? AND box=?",
                        (upto, site, box))
                nxt = self._x("SELECT min(seq) FROM events WHERE site=? AND box=? AND seq > ?",
                              (site, box, upto)).fetchone()[0]
                if nxt is not None:
                    gaps.append((site, box, upto + 1, int(nxt) - 1))
                elif int(delivered) > upto:
                    gaps.append((site, box, upto + 1, int(delivered)))
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return gaps

    def claim_replay(self, site: str, box: str, from_seq: int, to_seq: int,
                     backoff_s: float) -> bool:
        """True for exactly one ingest process per box and backoff window: it sends replay."""
        now = int(time.time())
        self._begin()
        try:
            row = self._x(
                "INSERT INTO replay_requests VALUES (?,?,?,?,?) ON CONFLICT (site, box) DO "
                "UPDATE SET from_seq=excluded.from_seq, to_seq=excluded.to_seq, "
                "requested_epoch=excluded.requested_epoch "
                "WHERE replay_requests.requested_epoch <= ? RETURNING 1",
                (site, box, from_seq, to_seq, now, now - int(backoff_s))).fetchone()
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return row is not None

    # ---- reads for tests and tools --------------------------------------------------------
    def seqs(self, site: str, box: str) -> list[int]:
        rows = self._x("SELECT seq FROM events WHERE site=? AND box=? ORDER BY seq",
                       (site, box)).fetchall()
        self._end_read()
        return [int(r[0]) for r in rows]

    def events(self, site: str, box: str) -> list[dict[str, Any]]:
        rows = self._x("SELECT envelope FROM events WHERE site=? AND box=? ORDER BY seq",
                       (site, box)).fetchall()
        self._end_read()
        return [json.loads(r[0]) for r in rows]

    def events_of(self, site: str, box: str, types: Sequence[str], ts_from: str,
                  ts_to: str, always: Sequence[str] = ()) -> list[dict[str, Any]]:
        """One box's events of `types` with `ts_from <= ts < ts_to` (text order: the box writes
        one UTC offset), plus every event of the `always` types; in seq order."""
        every = [*types, *always]
        q = (f"SELECT envelope FROM events WHERE site=? AND box=? AND type IN "
             f"({','.join('?' * len(every))}) AND ((ts >= ? AND ts < ?)"
             + (f" OR type IN ({','.join('?' * len(always))})" if always else "")
             + ") ORDER BY seq")
        rows = self._x(q, (site, box, *every, ts_from, ts_to, *always)).fetchall()
        self._end_read()
        return [json.loads(r[0]) for r in rows]

    def stored_by(self) -> dict[str, int]:
        rows = self._x("SELECT ingest, count(*) FROM events GROUP BY ingest").fetchall()
        self._end_read()
        return {str(r[0]): int(r[1]) for r in rows}

    def breaks(self) -> list[tuple[Any, ...]]:
        rows = self._x("SELECT site, box, seq, reason, detail FROM chain_breaks ORDER BY seq"
                       ).fetchall()
        self._end_read()
        return [tuple(r) for r in rows]

    def box(self, site: str, box: str) -> dict[str, Any] | None:
        row = self._x("SELECT online, boot, head_seq, head_hash, delivered_upto, contiguous_upto"
                      " FROM boxes WHERE site=? AND box=?", (site, box)).fetchone()
        self._end_read()
        if row is None:
            return None
        keys = ("online", "boot", "head_seq", "head_hash", "delivered_upto", "contiguous_upto")
        return dict(zip(keys, row, strict=True))

    def _end_read(self) -> None:
        if self.pg:
            self.conn.rollback()


def valid_envelope(obj: Any) -> bool:
    if not (isinstance(obj, dict) and set(obj) == set(ENVELOPE_FIELDS)
            and isinstance(obj.get("seq"), int) and obj["seq"] >= 1
            and all(isinstance(obj.get(k), str) for k in
                    ("id", "ts", "site", "box", "type", "prev_hash", "hash"))
            and isinstance(obj.get("data"), dict)):
        return False
    # JSON may carry a lone surrogate ("\udc00") that UTF-8 cannot: such an envelope has no
    # canonical form, and hashing it in `insert` would fail the whole batch again and again.
    try:
        canonical_json(obj)
    except UnicodeEncodeError:
        return False
    return True
