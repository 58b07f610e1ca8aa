"""The event envelope and its hash chain (the contract; see docs/architecture.md)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import datetime
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
ENVELOPE_FIELDS = ("id", "seq", "ts", "site", "box", "type", "data", "prev_hash", "hash")


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 for float-free JSON: sorted keys, no spaces, UTF-8.

    The bytes are those of `json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`, which sealed every journal written so far and which `hallbox verify`
    and the central side recompute. orjson writes the same bytes for plain JSON (str keys,
    strings, 64-bit integers, booleans, null, lists) about ten times faster, and sealing is
    most of the store writer's time; anything else (floats, whose spelling differs, wider
    integers, subclasses, text orjson refuses such as a lone surrogate) takes the reference path
    (tests/test_events_canonical.py checks the two agree).
    """
    if _plain(obj):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return canonical_json_reference(obj)


def canonical_json_reference(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _plain(obj: Any) -> bool:
    """JSON that orjson and json.dumps spell alike (exact types only: no floats, no subclasses)."""
    t = type(obj)
    if t is str or t is bool or obj is None:
        return True
    if t is int:
        return _INT_MIN <= obj <= _INT_MAX
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str or not _plain(v):
                return False
        return True
    if t is list:
        return all(_plain(v) for v in obj)
    return False


def event_hash(envelope: dict[str, Any]) -> str:
    """SHA-256 over every field but `hash` itself (prev_hash included)."""
    body = {k: v for k, v in envelope.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


class _Random(threading.local):
    """os.urandom in 4 KiB helpings: a getrandom call per event (one per id) released and
    retook the GIL each time, which the writer thread paid for under load."""

    def __init__(self) -> None:
        self.buf = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.buf):
            self.buf, self.at = os.urandom(4096), 0
        out = self.buf[self.at:self.at + n]
        self.at += n
        return out


_random = _Random()


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit ms timestamp, version, random bits; sortable by time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random.take(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"  # as str(uuid.UUID(int=value)), without building the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def rfc3339(when: datetime) -> str:
    """RFC 3339 with the offset spelled out and millisecond precision."""
    if when.tzinfo is None:
        raise ValueError("event times must be aware")
    return when.isoformat(timespec="milliseconds")


def seal(
    *, seq: int, ts: datetime, site: str, box: str, type_: str, data: dict[str, Any],
    prev_hash: str, event_id: str | None = None,
) -> dict[str, Any]:
    """Build a full envelope, hash included."""
    return seal_canonical(seq=seq, ts=ts, site=site, box=box, type_=type_, data=data,
                          prev_hash=prev_hash, event_id=event_id)[0]


def seal_canonical(
    *, seq: int, ts: datetime, site: str, box: str, type_: str, data: dict[str, Any],
    prev_hash: str, event_id: str | None = None,
) -> tuple[dict[str, Any], bytes]:
    """The envelope and its canonical_json, serialising `data` once.

    Sorted, the envelope's keys are box, data | hash | id, prev_hash, seq, site, ts, type: the
    hashed body is the two halves joined, and the stored text is the same with `"hash":"…"`
    between them (a hex digest needs no escaping). Byte-identical to canonical_json(env) and
    event_hash (tests/test_events_canonical.py); the writer thread did both in full per event.
    """
    env: dict[str, Any] = {
        "id": event_id or uuid7(),
        "seq": seq,
        "ts": rfc3339(ts),
        "site": site,
        "box": box,
        "type": type_,
        "data": data,
        "prev_hash": prev_hash,
    }
    head = canonical_json({"box": box, "data": data})[:-1]
    tail = canonical_json({"id": env["id"], "prev_hash": prev_hash, "seq": seq, "site": site,
                           "ts": env["ts"], "type": type_})[1:]
    digest = hashlib.sha256(b"".join((head, b",", tail))).hexdigest()
    env["hash"] = digest
    return env, b"".join((head, b',"hash":"', digest.encode("ascii"), b'",', tail))
