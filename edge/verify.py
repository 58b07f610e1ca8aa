"""Walk the journal's hash chain and say where it first breaks, and why."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.events import ENVELOPE_FIELDS, GENESIS_HASH, event_hash
from edge.store import JournalFile


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None


def verify_db(path: str | Path) -> VerifyResult:
    p = Path(path)
    if not p.is_file():
        return VerifyResult(False, 0, 0, GENESIS_HASH, 0, f"no database at {p}")
    db = JournalFile(p)
    try:
        return _walk(db.journal_rows(), db)
    except sqlite3.DatabaseError as e:
        return VerifyResult(False, 0, 0, GENESIS_HASH, 0, f"unreadable database: {e}")
    finally:
        db.close()


def _walk(rows: Iterable[tuple[int, str, str, str, str, str, str]],
          db: JournalFile) -> VerifyResult:
    expected, prev, n = 1, GENESIS_HASH, 0

    def broken(seq: int, why: str) -> VerifyResult:
        return VerifyResult(False, n, expected - 1, prev, seq, why)

    for seq, eid, ts, typ, prev_col, hash_col, raw in rows:
        if seq != expected:
            return broken(expected, f"seq {expected} is missing (next row is seq {seq})"
                          if seq > expected else f"seq {seq} appears out of order")
        try:
            env = json.loads(raw)
        except json.JSONDecodeError as e:
            return broken(seq, f"envelope is not JSON: {e}")
        if not isinstance(env, dict) or set(env) != set(ENVELOPE_FIELDS):
            return broken(seq, "envelope fields are not exactly " + ", ".join(ENVELOPE_FIELDS))
        if env["seq"] != seq:
            return broken(seq, f"envelope says seq {env['seq']} but the row is seq {seq}")
        if env["prev_hash"] != prev:
            return broken(seq, "prev_hash does not match the hash of the event before "
                          "(an event was removed, inserted or altered)")
        if event_hash(env) != env["hash"]:
            return broken(seq, "hash does not match the event's content (altered)")
        if (eid, ts, typ, prev_col, hash_col) != (env["id"], env["ts"], env["type"],
                                                  env["prev_hash"], env["hash"]):
            return broken(seq, "index columns disagree with the envelope (altered)")
        prev, expected, n = env["hash"], expected + 1, n + 1
    # The outbox refers to journal rows: a queued event whose journal row is gone was removed
    # from the tail, which the chain alone cannot show.
    missing = db.outbox_seq_from(expected)
    if missing is not None:
        return VerifyResult(False, n, expected - 1, prev, missing,
                            f"outbox holds seq {missing} but the journal ends at "
                            f"{expected - 1} (events removed from the tail)")
    return VerifyResult(True, n, expected - 1, prev)
