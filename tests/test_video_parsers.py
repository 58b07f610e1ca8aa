"""The recorder's parsers fuzzed: ffmpeg's segment list (read while it is being written) and
the signed clip url's parameters (reachable without a token)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.recorder import clips as C
from edge.recorder.segments import parse_list

SECRET = b"k" * 32


def test_segment_list_keeps_only_complete_lines() -> None:
    text = "000000.mp4,0.000000,1.898438\n000001.mp4,1.898438,2.898438\n000002.mp4,2.89"
    assert parse_list(text) == [("000000.mp4", 0.0, 1.898438),
                                ("000001.mp4", 1.898438, 2.898438)]
    assert parse_list("../x.mp4,0,1\n000003.mp4,a,b\n") == []


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_segment_list_never_raises_and_names_only_segments(text: str) -> None:
    for name, start, end in parse_list(text):
        assert name.endswith(".mp4") and "/" not in name and len(name) == 10
        assert isinstance(start, float) and isinstance(end, float)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80), st.text(max_size=30), st.text(max_size=80))
def test_clip_url_check_refuses_cleanly(clip: str, exp: str, sig: str) -> None:
    try:
        C.check(SECRET, clip, exp, sig)
    except C.ClipRefused as e:
        assert e.status in (400, 403, 410) and e.code in ("bad-path", "forged-url",
                                                          "expired-url")
    else:  # only a url this secret signed can pass
        assert sig == C.sign(SECRET, clip, int(exp))


def test_clip_url_check_accepts_its_own_and_refuses_the_rest() -> None:
    clip = "A" * 24
    exp = int(time.time()) + 60
    C.check(SECRET, clip, str(exp), C.sign(SECRET, clip, exp))
    with pytest.raises(C.ClipRefused, match="signature"):
        C.check(SECRET, clip, str(exp + 1), C.sign(SECRET, clip, exp))
    with pytest.raises(C.ClipRefused, match="expired"):
        C.check(SECRET, clip, str(exp - 120), C.sign(SECRET, clip, exp - 120))
    with pytest.raises(C.ClipRefused) as e:
        C.check(SECRET, "../../hallbox.db", str(exp), C.sign(SECRET, "../../hallbox.db", exp))
    assert e.value.code == "bad-path"


def test_ffmpeg_messages_lose_url_credentials() -> None:
    from edge.recorder.segments import scrub

    line = "[in#0] rtsp://hallbox:pw-w1@127.0.0.1:554/cam-w1: Connection refused"
    assert scrub(line) == "[in#0] rtsp://<redacted>@127.0.0.1:554/cam-w1: Connection refused"
    assert "secret" not in scrub("from 'rtsp://admin:secret@10.0.0.5/Streaming/101'")
    assert scrub("no url here: a@b") == "no url here: a@b"


def test_list_tail_reads_only_new_complete_lines(tmp_path) -> None:
    from edge.recorder.segments import ListTail

    p = tmp_path / "list.csv"
    tail = ListTail(p)
    assert tail.new_entries() == []  # not there yet
    p.write_text("000000.mp4,0.000000,1.0\n000001.mp4,1.0,2.")
    assert tail.new_entries() == [("000000.mp4", 0.0, 1.0)]
    with p.open("a") as f:
        f.write("0\n000002.mp4,2.0,3.0\n")
    assert tail.new_entries() == [("000001.mp4", 1.0, 2.0), ("000002.mp4", 2.0, 3.0)]
    assert tail.new_entries() == []
