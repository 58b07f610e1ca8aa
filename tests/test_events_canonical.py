"""The writer's one-pass sealing is byte-identical to the contract's canonical JSON and hash."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.events import (
    canonical_json,
    canonical_json_reference,
    event_hash,
    seal_canonical,
    uuid7,
)

# Text with what JSON escapes or keeps: control characters, quotes, backslashes, U+2028/2029,
# astral characters, lone surrogates' neighbours; keys alike (sorting by code point).
TEXT = st.text(st.characters(codec=None, exclude_categories=("Cs",)), max_size=12) | \
    st.sampled_from(["\u2028", "\u2029", "\x00\x1f\x7f", "😀𝄞", '"\\/', "id", "hash", "数据"])
SCALAR = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | TEXT
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(TEXT, JSON, max_size=6), seq=st.integers(1, 2**53),
       site=TEXT, box=TEXT, type_=TEXT, minutes=st.integers(-720, 840),
       prev=st.binary(min_size=32, max_size=32))
def test_seal_canonical_is_canonical_json_of_the_envelope(
        data: dict[str, Any], seq: int, site: str, box: str, type_: str, minutes: int,
        prev: bytes) -> None:
    ts = datetime(2026, 3, 2, 9, 0, 0, 123000, tzinfo=timezone(timedelta(minutes=minutes)))
    prev_hash = hashlib.sha256(prev).hexdigest()
    env, text = seal_canonical(seq=seq, ts=ts, site=site, box=box, type_=type_, data=data,
                               prev_hash=prev_hash)
    assert text == canonical_json(env)
    assert env["hash"] == event_hash(env)
    assert set(env) == {"id", "seq", "ts", "site", "box", "type", "data", "prev_hash", "hash"}


def test_a_known_envelope() -> None:
    # Pinned by hand from the reference functions, so the fast path cannot drift with them.
    env, text = seal_canonical(seq=7, ts=datetime(2026, 3, 2, 1, 0, tzinfo=UTC), site="s",
                               box="b", type_="ticket.issued", data={"z": 1, "a": "\u2028"},
                               prev_hash="0" * 64, event_id="x")
    body = ('{"box":"b","data":{"a":"\u2028","z":1},"id":"x","prev_hash":"' + "0" * 64
            + '","seq":7,"site":"s","ts":"2026-03-02T01:00:00.000+00:00",'
            '"type":"ticket.issued"}')
    digest = hashlib.sha256(body.encode()).hexdigest()
    assert env["hash"] == digest
    assert text.decode() == body.replace('"id":"x"', f'"hash":"{digest}","id":"x"')


# Everything an event's data could hold, floats, wide integers, tuples, enum members and lone
# surrogates included: the fast path must agree with the reference byte for byte, or raise the
# same error.
ANY_TEXT = st.text(st.characters(codec=None), max_size=12) | TEXT


class _Kind(StrEnum):
    A = "a"


ANY_SCALAR = (st.none() | st.booleans() | st.integers(-(2**80), 2**80) | ANY_TEXT
              | st.floats(allow_nan=False, allow_infinity=False) | st.just(_Kind.A))
ANY_JSON = st.recursive(ANY_SCALAR, lambda inner: st.lists(inner, max_size=4)
                        | st.lists(inner, max_size=3).map(tuple)
                        | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=20)


@settings(max_examples=1000, deadline=None)
@given(obj=ANY_JSON)
def test_canonical_json_is_the_reference_spelling(obj: Any) -> None:
    try:
        want: bytes | type[BaseException] = canonical_json_reference(obj)
    except (UnicodeEncodeError, TypeError, ValueError) as e:
        want = type(e)
    try:
        got: bytes | type[BaseException] = canonical_json(obj)
    except (UnicodeEncodeError, TypeError, ValueError) as e:
        got = type(e)
    assert got == want


def test_canonical_json_edges() -> None:
    for obj in ({"b": 1, "a": [True, None, "\x00\x1f\x7f\u2028", 2**64 - 1, -(2**63)]},
                {"é": 1, "e": 2, "😀": 3, "\uffff": 4}, {"x": 1.0, "y": 1e16, "z": 1e-7},
                {"big": 2**64, "small": -(2**63) - 1}, ["\ud800"]):
        try:
            want: Any = canonical_json_reference(obj)
        except UnicodeEncodeError:
            want = UnicodeEncodeError
        try:
            got: Any = canonical_json(obj)
        except UnicodeEncodeError:
            got = UnicodeEncodeError
        assert got == want, obj


def test_uuid7_is_a_version_7_uuid_spelled_as_uuid_does() -> None:
    for _ in range(200):
        u = uuid7()
        parsed = uuid.UUID(u)
        assert str(parsed) == u and parsed.version == 7 and parsed.variant == uuid.RFC_4122
