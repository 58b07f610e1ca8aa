"""The device codecs, fuzzed: garbage, truncated, oversized and corrupted frames are dropped and
counted, never raise or hang; valid frames survive any chunking and any noise around them."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.protocols import at_board, bx5, escpos
from drivers.protocols import keypad as kp

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


# ---- keypad FF 68 frames ------------------------------------------------------------------
kp_frames = st.builds(kp.KeypadFrame, st.integers(1, 254), st.integers(0, 255),
                      st.binary(max_size=kp.MAX_DATA))


def test_keypad_known_bytes() -> None:
    assert kp.encode(kp.KeypadFrame(3, kp.Func.KEY_CALL)) == bytes.fromhex("ff6802026803010416")
    assert kp.ack(3, 1) == bytes.fromhex("ff680404680380010084 16".replace(" ", ""))
    d = kp.KeypadDecoder()
    assert d.feed(bytes.fromhex("ff6802026803010416")) == [kp.KeypadFrame(3, 1)]


@FAST
@given(st.lists(kp_frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=6))
def test_keypad_roundtrip_any_chunking(frames, cuts) -> None:
    wire = b"".join(kp.encode(f) for f in frames)
    d = kp.KeypadDecoder()
    got = [f for c in chunked(wire, cuts) for f in d.feed(c)]
    assert got == frames
    assert d.stats.dropped == 0


@FAST
@given(kp_frames, st.binary(max_size=200), st.binary(max_size=200))
def test_keypad_frame_survives_noise_without_sync(frame, before, after) -> None:
    # Noise free of the start byte cannot fake a frame header.
    before, after = before.replace(b"\x68", b""), after.replace(b"\x68", b"")
    d = kp.KeypadDecoder()
    assert d.feed(before + kp.encode(frame) + after) == [frame]


@FAST
@given(kp_frames, st.data())
def test_keypad_corrupted_byte_is_dropped_and_counted(frame, data) -> None:
    wire = bytearray(kp.encode(frame))
    i = data.draw(st.integers(1, len(wire) - 1))  # byte 0 (wake) is optional anyway
    wire[i] ^= data.draw(st.integers(1, 255))
    d = kp.KeypadDecoder()
    got = d.feed(bytes(wire)) + d.feed(kp.encode(frame))
    # The corrupted copy never decodes to anything else; the clean copy after it decodes.
    assert got[-1] == frame
    assert all(g == frame for g in got)
    if len(got) == 1:
        assert d.stats.dropped + d.stats.garbage_bytes > 0


@FAST
@given(kp_frames, st.integers(1, 60), kp_frames)
def test_keypad_truncated_frame_then_valid(frame, cut, nxt) -> None:
    wire = kp.encode(frame)
    d = kp.KeypadDecoder()
    got = d.feed(wire[:max(1, len(wire) - cut)]) + d.feed(kp.encode(nxt))
    assert got[-1] == nxt


def test_keypad_oversized_length_dropped() -> None:
    d = kp.KeypadDecoder()
    body = bytes(100)
    bad = bytes([0xFF, 0x68, 100, 100, 0x68]) + body + bytes([0, 0x16])
    assert d.feed(bad + kp.encode(kp.KeypadFrame(1, 1))) == [kp.KeypadFrame(1, 1)]
    assert d.stats.bad_length >= 1
    with pytest.raises(ValueError):
        kp.encode(kp.KeypadFrame(1, 1, bytes(kp.MAX_DATA + 1)))


@FAST
@given(st.binary(max_size=2000))
def test_keypad_garbage_never_raises_and_buffer_bounded(junk) -> None:
    d = kp.KeypadDecoder()
    d.feed(junk)
    assert len(d._buf) <= 4 + kp.MAX_L + 2


def test_display_roundtrip() -> None:
    f = kp.KeypadDecoder().feed(kp.display(5, 12, "A023", "PAUSE"))[0]
    assert kp.parse_display(f.data) == (12, "A023", "PAUSE")


# ---- BX-5 ----------------------------------------------------------------------------------
def test_crc16_arc_check_value() -> None:
    assert bx5.crc16_arc(b"123456789") == 0xBB3D  # the catalogue check value of CRC-16/ARC


texts = st.text(alphabet=st.sampled_from("请号到窗口办理暂停服务欢迎光临ABCDEFG0123456789 ·丂"),
                max_size=60)
bx_texts = st.builds(bx5.DynamicText, st.integers(1, 254), texts)


@FAST
@given(st.lists(bx_texts, max_size=5), st.lists(st.integers(0, 10_000), max_size=6))
def test_bx5_roundtrip_any_chunking(items, cuts) -> None:
    wire = b"".join(bx5.encode_text(t) for t in items)
    d = bx5.Bx5Decoder()
    got = [bx5.parse_text(p) for c in chunked(wire, cuts) for p in d.feed(c)]
    assert got == items
    assert d.stats.dropped == 0


def test_bx5_escapes_reserved_bytes() -> None:
    t = bx5.DynamicText(0xA5, "Z[丂", x=0x5A5B, y=0xA6A5)  # addresses/fields hit escapes
    wire = bx5.encode_text(t)
    inner = wire[bx5.HEAD_LEN:-1]
    assert bx5.HEAD not in inner and bx5.TAIL not in inner
    assert bx5.parse_text(bx5.Bx5Decoder().feed(wire)[0]) == t


@FAST
@given(bx_texts, st.data())
def test_bx5_corrupted_byte_dropped(t, data) -> None:
    wire = bytearray(bx5.encode_text(t))
    i = data.draw(st.integers(bx5.HEAD_LEN, len(wire) - 2))
    wire[i] ^= data.draw(st.integers(1, 255))
    d = bx5.Bx5Decoder()
    got = d.feed(bytes(wire)) + d.feed(bx5.encode_text(t))
    assert [bx5.parse_text(p) for p in got][-1] == t
    assert len(got) == 1 or all(bx5.parse_text(p) == t for p in got)


@FAST
@given(bx_texts, st.integers(1, 40), bx_texts)
def test_bx5_truncated_then_valid(t, cut, nxt) -> None:
    wire = bx5.encode_text(t)
    d = bx5.Bx5Decoder()
    got = d.feed(wire[:max(1, len(wire) - cut)]) + d.feed(bx5.encode_text(nxt))
    assert bx5.parse_text(got[-1]) == nxt


def test_bx5_oversized_dropped() -> None:
    d = bx5.Bx5Decoder()
    assert d.feed(b"\xa5" * 8 + b"\x01" * (5 * bx5.MAX_PACKET) + b"\x5a") == []
    assert d.stats.oversized == 1
    with pytest.raises(ValueError):
        bx5.encode_text(bx5.DynamicText(1, "字" * 600))


@FAST
@given(st.binary(max_size=3000))
def test_bx5_garbage_never_raises(junk) -> None:
    d = bx5.Bx5Decoder()
    for p in d.feed(junk):
        try:
            bx5.parse_text(p)
        except (ValueError, UnicodeDecodeError):
            pass
    assert len(d._buf) <= 2 * bx5.MAX_PACKET + 32


# ---- "@" boards -----------------------------------------------------------------------------
@FAST
@given(st.lists(st.tuples(st.integers(1, 254), texts), max_size=6),
       st.lists(st.integers(0, 10_000), max_size=6))
def test_at_roundtrip_any_chunking(items, cuts) -> None:
    wire = b"".join(at_board.encode(a, t) for a, t in items)
    d = at_board.AtDecoder()
    got = [(f.address, f.text) for c in chunked(wire, cuts) for f in d.feed(c)]
    assert got == items


def test_text_outside_gbk_shows_question_mark() -> None:
    assert at_board.AtDecoder().feed(at_board.encode(2, "A¥1"))[0].text == "A?1"
    p = bx5.Bx5Decoder().feed(bx5.encode_text(bx5.DynamicText(2, "A¥1")))[0]
    assert bx5.parse_text(p).text == "A?1"


def test_at_gbk_trail_byte_at_sign_is_text() -> None:
    # "丂" is 81 40 in GBK: its trail byte is "@" and must not start a frame.
    wire = at_board.encode(7, "丂A023")
    assert wire[5:6] == b"@"
    assert at_board.AtDecoder().feed(wire) == [at_board.AtFrame(7, "丂A023")]


def test_at_bad_frames_dropped_and_counted() -> None:
    d = at_board.AtDecoder()
    wire = b"@x12abc\r" + b"@999abc\r" + b"@001" + b"\xff\xff" + b"\r" + \
        b"@002" + b"A" * 300 + b"\r" + at_board.encode(3, "好")
    assert d.feed(wire) == [at_board.AtFrame(3, "好")]
    assert d.stats.bad_address == 2 and d.stats.bad_text == 1 and d.stats.oversized == 1


@FAST
@given(st.binary(max_size=2000))
def test_at_garbage_never_raises(junk) -> None:
    d = at_board.AtDecoder()
    d.feed(junk)
    assert len(d._buf) <= 3 + at_board.MAX_TEXT


# ---- ESC/POS --------------------------------------------------------------------------------
def _ticket(qr: str = "native") -> bytes:
    return escpos.ticket_bytes(escpos.TicketContent(
        hall="天河区政务服务中心", service="社会民生", number="A023", ahead=4, est_wait_min=12,
        time="2026-11-23 09:04", qr_payload="https://zwfw.example.gov.cn/q/20261123-A023",
        footer="！？。，、", priority_note="绿色通道"), qr=qr)  # type: ignore[arg-type]


def test_full_width_punctuation_is_not_question_marks() -> None:
    wire = _ticket()
    assert b"???" not in wire
    assert "！？。，、".encode("gb18030") in wire
    els = escpos.EscPosDecoder().feed(wire)
    assert any(isinstance(e, escpos.Line) and e.text == "！？。，、" for e in els)


def test_without_hanzi_mode_the_printer_prints_garbage() -> None:
    # The reason FS & is sent: our decoder, like a printer, treats bytes as code page text.
    d = escpos.EscPosDecoder()
    d.feed("社会民生\n".encode("gb18030"))
    assert d.stats.bad_text == 1


@FAST
@given(st.lists(st.integers(0, 100_000), max_size=8))
def test_escpos_ticket_any_chunking(cuts) -> None:
    wire = _ticket()
    whole = escpos.EscPosDecoder().feed(wire)
    d = escpos.EscPosDecoder()
    assert [e for c in chunked(wire, cuts) for e in d.feed(c)] == whole
    assert isinstance(whole[-1], escpos.Cut)
    assert escpos.QrCode("https://zwfw.example.gov.cn/q/20261123-A023", 6) in whole


def test_escpos_image_fallback_matches_qr_matrix() -> None:
    payload = "https://zwfw.example.gov.cn/q/20261123-A023"
    els = escpos.EscPosDecoder().feed(_ticket("image"))
    img = next(e for e in els if isinstance(e, escpos.Image))
    m = escpos.qr_matrix(payload)
    assert img.height == len(m) * 4
    assert all(img.dot(x * 4 + 1, y * 4 + 1) == bool(v)
               for y, row in enumerate(m) for x, v in enumerate(row))


def test_status_bytes_roundtrip() -> None:
    for st_ in (escpos.PrinterStatus(), escpos.PrinterStatus(near_end=True),
                escpos.PrinterStatus(paper_end=True), escpos.PrinterStatus(cover_open=True)):
        got = escpos.parse_status(escpos.status_bytes(2, st_)[0],
                                  escpos.status_bytes(4, st_)[0])
        assert got.state == st_.state
    assert escpos.status_bytes(4, escpos.PrinterStatus(paper_end=True)) == b"\x72"
    with pytest.raises(ValueError):
        escpos.parse_status(0x00, 0x12)


@FAST
@given(st.binary(max_size=3000))
def test_escpos_garbage_never_raises_buffer_bounded(junk) -> None:
    d = escpos.EscPosDecoder()
    d.feed(junk)
    assert len(d._buf) <= 8 + escpos.RASTER_MAX_BYTES
    assert len(d._line) <= escpos.LINE_MAX


def test_escpos_oversized_declarations_dropped() -> None:
    d = escpos.EscPosDecoder()
    els = d.feed(b"\x1d(k\xff\xff" + b"\x1dv0\x00\xff\xff\xff\xff" + b"OK\n")
    assert d.stats.oversized == 2
    assert escpos.Line("OK", 0, 1, 1, False) in els


# ---- 10^6 frames per parser (make test-long) ------------------------------------------------
def _mangle(rng: random.Random, frame: bytes) -> bytes:
    r = rng.random()
    if r < 0.5:
        return frame
    if r < 0.65:  # bad checksum / flipped byte
        b = bytearray(frame)
        i = rng.randrange(len(b))
        b[i] ^= rng.randrange(1, 256)
        return bytes(b)
    if r < 0.8 and len(frame) > 1:  # truncated
        return frame[:rng.randrange(1, len(frame))]
    if r < 0.9:  # garbage
        return rng.randbytes(rng.randrange(1, 40))
    return frame + frame[: rng.randrange(len(frame))]  # duplicated tail


@pytest.mark.long
@pytest.mark.parametrize("codec", ["keypad", "bx5", "at", "escpos"])
def test_million_frames(codec: str) -> None:
    rng = random.Random(20261123)
    n = 1_000_000
    if codec == "keypad":
        d: object = kp.KeypadDecoder()
        make = lambda: kp.encode(kp.KeypadFrame(rng.randrange(1, 255), rng.randrange(256),  # noqa: E731
                                                rng.randbytes(rng.randrange(0, 8))))
    elif codec == "bx5":
        d = bx5.Bx5Decoder()
        make = lambda: bx5.encode_text(bx5.DynamicText(rng.randrange(1, 255),  # noqa: E731
                                                       f"请A{rng.randrange(1000):03d}号"))
    elif codec == "at":
        d = at_board.AtDecoder()
        make = lambda: at_board.encode(rng.randrange(1, 255), f"A{rng.randrange(1000):03d}")  # noqa: E731
    else:
        d = escpos.EscPosDecoder()
        # Each "frame" yields one element: a Hanzi line, a cut or a status query.
        d.feed(b"\x1b@\x1c&")  # type: ignore[attr-defined]
        make = lambda: rng.choice(["号A023\n".encode("gb18030"), b"\x1dVB\x00",  # noqa: E731
                                   b"\x10\x04\x04", b"\x1d!\x22OK\n"])
    got = 0
    batch: list[bytes] = []
    for i in range(n):
        batch.append(_mangle(rng, make()))
        if len(batch) == 1000 or i == n - 1:
            got += len(d.feed(b"".join(batch)))  # type: ignore[attr-defined]
            batch.clear()
    assert got > n // 3  # at least the untouched half, minus frames noise swallowed
    assert len(d._buf) < 10_000  # type: ignore[attr-defined]
