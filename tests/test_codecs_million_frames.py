"""Every codec fed 10^6 frames (`make test-long`), and the same run with 2,000 frames per codec
in the default suite.

A seeded generator makes valid frames (random fields, as the hypothesis strategies of the codec
tests do, but at a million frames a test hypothesis is far too slow) and mutates about 60% of
them: bit flips, a byte replaced, truncation, random bytes inserted, a slice deleted or repeated,
two frames spliced, or pure noise. The contract held for each codec:
- it never raises anything but its own refusal (ValueError and its subclasses, ClipRefused),
  and its buffers stay bounded: nothing waits forever for bytes a damaged length promised;
- everything it decodes is consistent: encoded again and decoded by a fresh decoder, it comes
  back equal (a decoder that accepted a damaged frame must at least have accepted a frame);
- a damaged command or event never verifies unless its signed content is the original's;
- the untouched frames mostly survive the noise around them (at least half of them decode:
  a damaged length may swallow a neighbour, never the stream).

Stream decoders get the mutated frames of a batch joined and cut into random chunks, as a
serial port delivers them; message parsers get one payload at a time, as MQTT and HTTP do.
The seed is fixed (SEED): a failure replays; HALLBOX_FUZZ_SEED picks another.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drivers.protocols import at_board, bx5, escpos, r30x, zk
from drivers.protocols import keypad as kp
from edge.central.store import valid_envelope
from edge.events import GENESIS_HASH, canonical_json, event_hash, seal
from edge.link import protocol as P
from edge.recorder import clips as C
from edge.recorder.segments import SEGMENT_RE, parse_list

SEED = int(os.environ.get("HALLBOX_FUZZ_SEED", "20261124"))
LONG_FRAMES = 1_000_000
QUICK_FRAMES = 2_000
BATCH = 1_000
HANZI = "请到号窗口办理业务欢迎光临政务服务中心取号评价满意"


# ---- the mutator ------------------------------------------------------------------------------
def mutate(rng: random.Random, frame: bytes, other: bytes) -> tuple[bytes, bool]:
    """(bytes, untouched?): about 40% of frames go through as they are."""
    r = rng.random()
    if r < 0.4 or not frame:
        return frame, True
    b = bytearray(frame)
    n = len(b)
    if r < 0.5:  # one to three bits flipped
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif r < 0.58:  # a byte replaced
        b[rng.randrange(n)] = rng.randrange(256)
    elif r < 0.68:  # cut short
        del b[rng.randrange(n):]
    elif r < 0.76:  # random bytes inserted
        at = rng.randrange(n + 1)
        b[at:at] = rng.randbytes(rng.randint(1, 16))
    elif r < 0.82:  # a slice deleted
        at = rng.randrange(n)
        del b[at:at + rng.randint(1, 8)]
    elif r < 0.88:  # a slice repeated
        at = rng.randrange(n)
        piece = b[at:at + rng.randint(1, 12)]
        b[at:at] = piece
    elif r < 0.95:  # two frames spliced
        b = b[:rng.randrange(n + 1)] + bytearray(other[rng.randrange(len(other) + 1):])
    else:  # noise
        b = bytearray(rng.randbytes(rng.randint(1, 64)))
    return bytes(b), bytes(b) == frame


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 7, 64, 512, 4096))
        out.append(data[i:i + rng.randint(1, n)])
        i += len(out[-1])
    return out


# ---- stream codecs: a decoder fed a byte stream ---------------------------------------------
@dataclass
class StreamCodec:
    make: Callable[[random.Random], bytes]  # one valid frame
    decoder: Callable[[], Any]
    reencode: Callable[[Any], bytes | None]  # None: the object has no single encoding to check
    max_buffer: int
    check: Callable[[Any], None] = lambda _obj: None  # a parser of the frame's data, if any
    # The decoder's counters after a clean stream: nothing dropped.
    dropped: Callable[[Any], int] = lambda d: int(d.stats.dropped)
    survive: float = 0.5  # the share of untouched frames that must still decode


def run_stream(codec: StreamCodec, frames: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    dec, again = codec.decoder(), codec.decoder()
    prev = codec.make(rng)
    untouched = decoded = checked = 0
    for start in range(0, frames, BATCH):
        batch = []
        for _ in range(min(BATCH, frames - start)):
            frame = codec.make(rng)
            wire, clean = mutate(rng, frame, prev)
            untouched += clean
            batch.append(wire)
            prev = frame
        got = []
        for piece in chunks(rng, b"".join(batch)):
            got += dec.feed(piece)
        assert len(dec._buf) <= codec.max_buffer
        decoded += len(got)
        # What was decoded, encoded again, must decode to the same objects from a clean stream.
        pairs = [(obj, codec.reencode(obj)) for obj in got]
        pairs = [(obj, raw) for obj, raw in pairs if raw is not None]
        checked += len(pairs)
        assert again.feed(b"".join(raw for _o, raw in pairs)) == [o for o, _r in pairs]
        assert codec.dropped(again) == 0 and not again._buf
        for obj in got:
            codec.check(obj)
    assert decoded >= untouched * codec.survive, (decoded, untouched, dec.stats)
    assert checked >= decoded // 2  # the consistency check did not skip its way to a pass
    return {"untouched": untouched, "decoded": decoded, "checked": checked}


def keypad_frame(rng: random.Random) -> bytes:
    func = rng.choice([*list(kp.Func), rng.randrange(256)])
    if func == kp.Func.DISPLAY and rng.random() < 0.8:
        return kp.display(rng.randint(1, 254), rng.randrange(70000),
                          f"A{rng.randrange(1000):03d}", rng.choice(["", "暂停", "PAUSE"]))
    return kp.encode(kp.KeypadFrame(rng.randint(1, 254), int(func),
                                    rng.randbytes(rng.randint(0, kp.MAX_DATA))))


def keypad_check(f: kp.KeypadFrame) -> None:
    if f.func == kp.Func.DISPLAY:
        try:
            waiting, _number, _status = kp.parse_display(f.data)
        except ValueError:
            return
        assert 0 <= waiting <= 0xFFFF


def hanzi_text(rng: random.Random, most: int) -> str:
    return "".join(rng.choice(HANZI + "ABC0123456789 ") for _ in range(rng.randint(0, most)))


def bx5_frame(rng: random.Random) -> bytes:
    if rng.random() < 0.7:
        return bx5.encode_text(bx5.DynamicText(
            rng.randint(1, 254), hanzi_text(rng, 30), rng.randrange(4), rng.randrange(64),
            rng.randrange(32), 128, 32, rng.choice([1, 3]), rng.randint(1, 5),
            rng.randint(1, 60), rng.random() < 0.5))
    return bx5.encode_packet(bx5.Packet(rng.randrange(0x10000), rng.randrange(0x10000),
                                        rng.randbytes(rng.randint(0, 64))))


def bx5_check(p: bx5.Packet) -> None:
    try:
        t = bx5.parse_text(p)
    except ValueError:  # UnicodeDecodeError included: not a dynamic-area text
        return
    try:
        raw = bx5.encode_text(t)
    except ValueError:  # fields the encoder refuses (text too long): refused, not wrong
        return
    (again,) = bx5.Bx5Decoder().feed(raw)
    assert bx5.parse_text(again) == t


def at_frame(rng: random.Random) -> bytes:
    return at_board.encode(rng.randint(1, 254), hanzi_text(rng, 40))


def escpos_frame(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.45:  # a styled line of text
        return b"".join([
            bytes([0x1B, 0x61, rng.randrange(3)]), escpos.size(rng.randint(1, 3),
                                                               rng.randint(1, 3)),
            escpos.bold(rng.random() < 0.3), bytes([0x1B, 0x2D, rng.randrange(3)]),
            escpos.HANZI_ON if rng.random() < 0.8 else escpos.HANZI_OFF,
            escpos.text(hanzi_text(rng, 20)), b"\n"])
    if r < 0.6:
        return escpos.qr_native(f"https://zwfw.example.gov.cn/q/{rng.randrange(10**8)}",
                                rng.randint(1, 16))
    if r < 0.7:
        wb, h = rng.randint(1, 8), rng.randint(1, 16)
        return bytes([0x1D, 0x76, 0x30, 0, wb, 0, h, 0]) + rng.randbytes(wb * h)
    if r < 0.8:
        return escpos.CUT
    if r < 0.9:
        return escpos.status_request(rng.randint(1, 4))
    return rng.choice([escpos.INIT, escpos.feed(rng.randrange(5)),
                       b"\x1dk\x04" + b"12345" + b"\0", b"\x1b(A\x04\x00" + rng.randbytes(4)])


def escpos_reencode(el: Any) -> bytes | None:
    """Each element on its own, with every style set: independent of the decoder's state."""
    if isinstance(el, escpos.Line):
        raw = el.text.encode("gb18030")
        if len(raw) > escpos.LINE_MAX:  # an over-long line is cut in two by design
            return None
        return b"".join([
            escpos.INIT, escpos.HANZI_ON, bytes([0x1B, 0x61, el.align]),
            bytes([0x1D, 0x21, (el.width - 1) << 4 | (el.height - 1)]),
            bytes([0x1B, 0x45, int(el.bold)]), bytes([0x1B, 0x2D, el.underline]),
            bytes([0x1B, 0x4D, el.font]), bytes([0x1D, 0x42, int(el.reverse)]),
            bytes([0x1B, 0x7B, int(el.upside_down)]), raw, b"\n"])
    if isinstance(el, escpos.QrCode):
        data = el.payload.encode("utf-8")
        n = len(data) + 3
        return (b"\x1d(k\x03\x00\x31\x43" + bytes([el.module])
                + b"\x1d(k" + bytes([n & 0xFF, n >> 8]) + b"\x31\x50\x30" + data
                + b"\x1d(k\x03\x00\x31\x51\x30")
    if isinstance(el, escpos.Image):
        wb = el.width // 8
        return bytes([0x1D, 0x76, 0x30, 0, wb & 0xFF, wb >> 8, el.height & 0xFF,
                      el.height >> 8]) + el.data
    if isinstance(el, escpos.Cut):
        return escpos.CUT
    assert isinstance(el, escpos.StatusQuery), el
    return escpos.status_request(el.n)


def zk_frame(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.3:
        punch = zk.ZkPunch(str(rng.randrange(1, 10**6)), datetime(2026, 11, 24, 8, 0)
                           + timedelta(seconds=rng.randrange(10**7)), rng.choice([0, 1, 2, 15]),
                           rng.randrange(6))
        data = zk.pack_live(punch)
    else:
        data = rng.randbytes(rng.randint(0, 64))
    return zk.encode(zk.ZkPacket(rng.randrange(0x10000), rng.randrange(0x10000),
                                 rng.randrange(0x10000), data))


def r30x_frame(rng: random.Random) -> bytes:
    return r30x.encode(r30x.R30xPacket(rng.randrange(2**32), rng.choice([1, 2, 7, 8]),
                                       rng.randbytes(rng.randint(1, 64))))


STREAMS: dict[str, StreamCodec] = {
    # A keypad frame is FF 68 L L 68 + L bytes + CS 16: at most one frame's bytes wait.
    "keypad": StreamCodec(keypad_frame, kp.KeypadDecoder, kp.encode, kp.MAX_L + 7,
                          keypad_check),
    "bx5": StreamCodec(bx5_frame, bx5.Bx5Decoder, bx5.encode_packet,
                       2 * bx5.MAX_PACKET + 32, bx5_check),
    "at_board": StreamCodec(at_frame, at_board.AtDecoder,
                            lambda f: at_board.encode(f.address, f.text), 3 + at_board.MAX_TEXT),
    "escpos": StreamCodec(escpos_frame, escpos.EscPosDecoder, escpos_reencode,
                          8 + escpos.RASTER_MAX_BYTES, dropped=lambda d: d.stats.unknown
                          + d.stats.oversized + d.stats.bad_text,
                          # A damaged raster or QR header declares up to 288 KB / 7 KB of data
                          # and, as on a printer, the frames behind it are that data.
                          survive=0.2),
    "zk": StreamCodec(zk_frame, zk.ZkDecoder, zk.encode, zk.MAX_PACKET + 8),
    "r30x": StreamCodec(r30x_frame, r30x.R30xDecoder, r30x.encode, r30x.MAX_PAYLOAD + 11),
}


# ---- message codecs: one payload at a time ------------------------------------------------
@dataclass
class MessageCodec:
    make: Callable[[random.Random], tuple[Any, bytes]]  # (what was encoded, its bytes)
    # (what the wire's bytes came from: this frame's and the previous one's, which a splice
    # mixes in; the wire) -> True: accepted (and checked), False: refused
    check: Callable[[tuple[Any, Any], bytes], bool]
    counts: dict[str, int] = field(default_factory=dict)


def run_messages(codec: MessageCodec, frames: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    prev_orig, prev = codec.make(rng)
    untouched = accepted_untouched = accepted = 0
    for _ in range(frames):
        orig, raw = codec.make(rng)
        wire, clean = mutate(rng, raw, prev)
        ok = codec.check((orig, prev_orig), wire)
        prev_orig, prev = orig, raw
        accepted += ok
        untouched += clean
        accepted_untouched += clean and ok
    # Every untouched frame is accepted: the checks refuse damage, not the codec's own output.
    assert accepted_untouched == untouched
    return {"untouched": untouched, "accepted": accepted}


def zk_records_make(rng: random.Random) -> tuple[Any, bytes]:
    kind = rng.choice(["live", "attlog", "users"])
    when = datetime(2026, 11, 24, 8, 0) + timedelta(seconds=rng.randrange(10**7))
    if kind == "live":
        return kind, zk.pack_live(zk.ZkPunch(str(rng.randrange(1, 10**8)), when, 1,
                                             rng.randrange(6)))
    if kind == "attlog":
        return kind, zk.pack_attlog([
            zk.ZkPunch(str(rng.randrange(1, 10**8)), when + timedelta(minutes=i),
                       rng.choice([0, 1, 2, 15]), rng.randrange(6), rng.randrange(1, 3000))
            for i in range(rng.randint(0, 4))])
    return kind, zk.pack_users([
        zk.ZkUser(rng.randrange(1, 3000), str(rng.randrange(1, 10**8)), hanzi_text(rng, 8)[:8],
                  rng.choice([0, 14]), str(rng.randrange(10**6)), rng.randrange(2**32),
                  rng.randint(1, 9)) for _ in range(rng.randint(0, 3))], "gbk")


def _ascii(*texts: str) -> bool:
    return all(t.isascii() for t in texts)


def zk_records_check(origs: tuple[str, str], wire: bytes) -> bool:
    """Parsed records, packed again and parsed, are the same records (a fixed point)."""
    kind = origs[0]
    if kind == "live":
        try:
            p = zk.unpack_live(wire)
        except ValueError:
            return False
        if _ascii(p.user_id) and len(p.user_id) < 24:
            assert zk.unpack_live(zk.pack_live(p)) == p
        return True
    if kind == "attlog":
        punches, bad = zk.unpack_attlog(wire)
        keep = [p for p in punches if _ascii(p.user_id) and len(p.user_id) < 24]
        again, bad_again = zk.unpack_attlog(zk.pack_attlog(keep))
        assert again == keep and bad_again == 0
        return bad == 0
    users, bad = zk.unpack_users(wire, "gbk")
    keep = []
    for u in users:
        try:
            zk.pack_users([u], "gbk")
        except (ValueError, struct.error):  # a replacement character or an overlong field
            continue
        keep.append(u)
    again, bad_again = zk.unpack_users(zk.pack_users(keep, "gbk"), "gbk")
    assert again == keep and bad_again == 0
    return bad == 0


def segment_list_make(rng: random.Random) -> tuple[Any, bytes]:
    t = rng.uniform(0, 10**5)
    lines = []
    for i in range(rng.randint(1, 5)):
        d = rng.uniform(0.5, 12)
        lines.append(f"{rng.randrange(10**6) + i:06d}.mp4,{t:.6f},{t + d:.6f}\n")
        t += d
    return None, "".join(lines).encode()


def segment_list_check(_origs: Any, wire: bytes) -> bool:
    entries = parse_list(wire.decode("utf-8", errors="replace"))
    for name, start, end in entries:
        assert SEGMENT_RE.fullmatch(name) and isinstance(start, float) and isinstance(end, float)
    # Written back as ffmpeg writes them, they read the same.
    again = parse_list("".join(f"{n},{s!r},{e!r}\n" for n, s, e in entries))
    assert [(n, repr(s), repr(e)) for n, s, e in again] == \
        [(n, repr(s), repr(e)) for n, s, e in entries]
    return bool(entries) or not wire.count(b"\n")


CLIP_SECRET = b"s" * 32


def clip_url_make(rng: random.Random) -> tuple[Any, bytes]:
    clip = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789-_")
                   for _ in range(rng.randint(16, 40)))
    exp = 1_800_000_000 + rng.randrange(10**6)
    return None, f"{clip}&{exp}&{C.sign(CLIP_SECRET, clip, exp)}".encode()


def clip_url_check(_origs: Any, wire: bytes) -> bool:
    parts = wire.decode("utf-8", errors="replace").split("&")
    if len(parts) != 3:
        return False
    clip, exp, sig = parts
    try:
        C.check(CLIP_SECRET, clip, exp, sig, now=1_700_000_000)
    except C.ClipRefused as e:
        assert (e.status, e.code) in ((400, "bad-path"), (403, "forged-url"),
                                      (410, "expired-url"))
        return False
    assert sig == C.sign(CLIP_SECRET, clip, int(exp))  # only what this secret signed passes
    return True


CMD_KEY = "k" * 32
SITE, BOX = "site-1", "box-1"


def link_command_make(rng: random.Random) -> tuple[Any, bytes]:
    name = rng.choice(["replay", "display.message", "health.get", "attendance.pull"])
    args = rng.choice([{}, {"from_seq": rng.randrange(10**6), "to_seq": rng.randrange(10**6)},
                       {"text": hanzi_text(rng, 20), "seconds": rng.randint(1, 600)}])
    cmd = P.make_command(CMD_KEY, SITE, BOX, name, args,
                         now=datetime(2026, 11, 24, 8, tzinfo=UTC)
                         + timedelta(seconds=rng.randrange(10**6)))
    return (name, cmd), json.dumps(cmd, ensure_ascii=rng.random() < 0.5).encode()


def link_command_check(origs: tuple[tuple[str, dict[str, Any]], ...], wire: bytes) -> bool:
    """The box's first steps with a command payload: UTF-8, a JSON object, its signature."""
    name = origs[0][0]
    try:
        got = json.loads(wire.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return False
    if not isinstance(got, dict) or not P.signature_ok(CMD_KEY, SITE, BOX, name, got):
        return False
    # A payload that still verifies says what a signed one said.
    assert P.signing_bytes(SITE, BOX, name, got) in {P.signing_bytes(SITE, BOX, n, c)
                                                     for n, c in origs}
    return True


def envelope_make(rng: random.Random) -> tuple[Any, bytes]:
    env = seal(seq=rng.randint(1, 10**6), ts=datetime(2026, 11, 24, 8, tzinfo=UTC)
               + timedelta(seconds=rng.randrange(10**6)), site=SITE, box=BOX,
               type_=rng.choice(["ticket.issued", "ticket.called", "punch.recorded"]),
               data={"ticket": f"A{rng.randrange(1000):03d}", "window": rng.randint(1, 250),
                     "name": hanzi_text(rng, 6)}, prev_hash=GENESIS_HASH)
    return env, json.dumps(env, ensure_ascii=rng.random() < 0.5).encode()


def envelope_check(origs: tuple[dict[str, Any], ...], wire: bytes) -> bool:
    """The central ingest's steps with an event payload: JSON, the envelope's shape, its hash."""
    try:
        got = json.loads(wire)
    except ValueError:
        return False
    if not valid_envelope(got) or event_hash(got) != got["hash"]:
        return False
    # An event whose hash still verifies is an event that was sealed.
    assert canonical_json(got) in {canonical_json(o) for o in origs}
    return True


MESSAGES: dict[str, MessageCodec] = {
    "zk_records": MessageCodec(zk_records_make, zk_records_check),
    "segment_list": MessageCodec(segment_list_make, segment_list_check),
    "clip_url": MessageCodec(clip_url_make, clip_url_check),
    "link_command": MessageCodec(link_command_make, link_command_check),
    "central_envelope": MessageCodec(envelope_make, envelope_check),
}
CODECS = [*STREAMS, *MESSAGES]


def run(name: str, frames: int) -> dict[str, int]:
    seed = SEED + sum(map(ord, name))  # each codec its own sequence, the same every run
    if name in STREAMS:
        return run_stream(STREAMS[name], frames, seed)
    return run_messages(MESSAGES[name], frames, seed)


def test_zk_packed_time_past_2099_is_refused_not_wrapped() -> None:
    # Found by this fuzzing: 2103 decoded, and encoded back as 2003 (the year is packed % 100).
    last = zk.encode_time(datetime(2099, 12, 31, 23, 59, 59))
    assert zk.decode_time(last) == datetime(2099, 12, 31, 23, 59, 59)
    with pytest.raises(ValueError):
        zk.decode_time(last + 1)
    with pytest.raises(ValueError):
        zk.decode_time(0xFFFFFFFF)


def test_envelope_with_a_lone_surrogate_is_refused_not_hashed() -> None:
    # Found by this fuzzing: json.loads takes "\udc00", canonical_json cannot encode it, and the
    # ingest's insert raised on it, retrying the whole batch as if the database were down.
    _env, raw = envelope_make(random.Random(1))
    env = json.loads(raw)
    assert valid_envelope(env)
    env["data"]["name"] = json.loads('"\\udc00"')
    assert not valid_envelope(env)


@pytest.mark.parametrize("codec", CODECS)
def test_codec_holds_its_contract_on_mutated_frames(codec: str) -> None:
    counts = run(codec, QUICK_FRAMES)
    assert counts["untouched"] > QUICK_FRAMES // 4


def test_a_forged_signature_that_cannot_be_encoded_is_refused() -> None:
    """Found by the million-frame run: a non-ASCII "sig" and a lone surrogate in the signed
    fields made signature_ok raise, and the command got no reply instead of a refusal."""
    from edge.link.protocol import make_command, signature_ok
    cmd = make_command("k", "site", "box", "ping")
    assert signature_ok("k", "site", "box", "ping", cmd)
    assert not signature_ok("k", "site", "box", "ping", {**cmd, "sig": "é" * 64})
    assert not signature_ok("k", "site", "box", "ping", {**cmd, "args": {"x": "\udc00"}})


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("codec", CODECS)
def test_a_million_mutated_frames(codec: str) -> None:
    counts = run(codec, LONG_FRAMES)
    assert counts["untouched"] > LONG_FRAMES // 4
