"""The writer's one-pass sealing is byte-identical to the contract's canonical JSON and hash."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.events import canonical_json, event_hash, seal_canonical

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
