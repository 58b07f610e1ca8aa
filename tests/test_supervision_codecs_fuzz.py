"""Fuzzing the ZK and R30x codecs: garbage, truncated, oversized and bad-checksum input is
dropped and counted; valid packets around it still come out; nothing raises or hangs."""

from __future__ import annotations

import os
import random
import struct
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.protocols import r30x, zk

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

zk_packets = st.builds(zk.ZkPacket, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                       st.integers(0, 0xFFFF), st.binary(max_size=300))
r30x_packets = st.builds(r30x.R30xPacket, st.integers(0, 0xFFFFFFFF),
                         st.sampled_from([1, 2, 7, 8]), st.binary(min_size=1, max_size=256))
CODECS = {
    "zk": (zk_packets, zk.encode, zk.ZkDecoder, zk.MAX_PACKET + 8),
    "r30x": (r30x_packets, r30x.encode, r30x.R30xDecoder, r30x.MAX_PAYLOAD + 11),
}


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def is_subsequence(needles: list, hay: list) -> bool:
    it = iter(hay)
    return all(any(n == h for h in it) for n in needles)


@pytest.mark.parametrize("codec", CODECS)
@FAST
@given(data=st.data())
def test_roundtrip_in_any_chunking(codec, data):
    strat, encode, decoder, _ = CODECS[codec]
    packets = data.draw(st.lists(strat, max_size=8))
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=10))
    dec = decoder()
    out = []
    for piece in chunked(b"".join(encode(p) for p in packets), cuts):
        out += dec.feed(piece)
    assert out == packets
    assert dec.stats.dropped == 0 and dec.stats.garbage_bytes == 0


@pytest.mark.parametrize("codec", CODECS)
@FAST
@given(data=st.data())
def test_garbage_truncated_and_corrupt_frames_are_dropped_and_counted(codec, data):
    strat, encode, decoder, max_frame = CODECS[codec]
    good = data.draw(st.lists(strat, min_size=1, max_size=5))
    garbage = data.draw(st.binary(max_size=400))
    victim = encode(data.draw(strat))
    flip = data.draw(st.integers(0, len(victim) - 1))
    corrupt = bytearray(victim)
    corrupt[flip] ^= data.draw(st.integers(1, 255))
    truncated = encode(data.draw(strat))[:data.draw(st.integers(1, 8))]
    stream = garbage + bytes(corrupt) + truncated + b"".join(encode(p) for p in good)
    # Padding flushes a bogus length that would wait for more bytes at the very end.
    stream += b"\0" * max_frame
    dec = decoder()
    out = []
    for piece in chunked(stream, data.draw(st.lists(st.integers(0, 100_000), max_size=8))):
        out += dec.feed(piece)
    assert is_subsequence(good, out)
    assert len(dec._buf) <= max_frame
    if bytes(corrupt) != victim and not garbage:
        assert dec.stats.dropped + dec.stats.garbage_bytes > 0


@pytest.mark.parametrize("codec", CODECS)
@FAST
@given(junk=st.binary(max_size=2000))
def test_random_bytes_never_raise_and_buffer_stays_bounded(codec, junk):
    _, _, decoder, max_frame = CODECS[codec]
    dec = decoder()
    dec.feed(junk)
    assert len(dec._buf) <= max_frame


def test_oversized_and_bad_checksum_counted():
    dec = zk.ZkDecoder()
    dec.feed(zk.MAGIC + struct.pack("<I", zk.MAX_PACKET + 1) + b"\0" * 16)
    assert dec.stats.bad_length == 1
    frame = bytearray(zk.encode(zk.ZkPacket(zk.CMD_ACK_OK, 1, 2, b"abc")))
    frame[10] ^= 0xFF  # the checksum field
    assert dec.feed(bytes(frame)) == [] and dec.stats.bad_checksum == 1
    assert dec.feed(zk.encode(zk.ZkPacket(zk.CMD_ACK_OK, 1, 3))) == [
        zk.ZkPacket(zk.CMD_ACK_OK, 1, 3)]
    rd = r30x.R30xDecoder()
    rd.feed(r30x.HEADER + struct.pack(">IBH", 0xFFFFFFFF, 1, 600) + b"\0" * 20)
    assert rd.stats.bad_length == 1
    bad = bytearray(r30x.command(r30x.Instr.GEN_IMG))
    bad[-1] ^= 1
    assert rd.feed(bytes(bad)) == [] and rd.stats.bad_checksum == 1


def test_known_bytes():
    # GenImg to the factory address, as printed in the module's manual.
    assert r30x.command(r30x.Instr.GEN_IMG).hex(" ") == "ef 01 ff ff ff ff 01 00 03 01 00 05"
    # The CMD_CONNECT every pyzk capture shows: session 0, reply 0, checksum 0xFFFF − 0x03E8.
    # (More frames captured from real terminals: tests/test_zk_interop.py.)
    assert zk.checksum(struct.pack("<4H", zk.CMD_CONNECT, 0, 0, 0)) == 0xFC17
    assert zk.encode(zk.ZkPacket(zk.CMD_CONNECT, 0, 0)).hex(" ") == \
        "50 50 82 7d 08 00 00 00 e8 03 17 fc 00 00 00 00"


@FAST
@given(st.binary(max_size=600), st.sampled_from(["gbk", "utf-8"]))
def test_record_parsers_never_raise(blob, enc):
    zk.unpack_users(blob, enc)
    zk.unpack_attlog(blob)
    try:
        zk.unpack_live(blob)
    except ValueError:
        pass  # a clear refusal is the expected outcome for junk


@FAST
@given(st.lists(st.tuples(st.text(alphabet="0123456789", min_size=1, max_size=9),
                          st.datetimes(min_value=datetime(2000, 1, 1),
                                       max_value=datetime(2099, 12, 31)),
                          st.integers(0, 5)), max_size=20))
def test_attlog_roundtrip(rows):
    punches = [zk.ZkPunch(u, t.replace(microsecond=0), 1, p, 0) for u, t, p in rows]
    got, bad = zk.unpack_attlog(zk.pack_attlog(punches))
    assert bad == 0
    assert [(p.user_id, p.when, p.punch) for p in got] == [
        (p.user_id, p.when, p.punch) for p in punches]


def test_gbk_names_roundtrip():
    users = [zk.ZkUser(1, "1", "张喆"), zk.ZkUser(2, "2", "欧阳娜娜"), zk.ZkUser(3, "3", "Li Na")]
    blob = zk.pack_users(users, "gbk")
    assert "张喆".encode("gbk") in blob
    assert [u.name for u in zk.unpack_users(blob, "gbk")[0]] == ["张喆", "欧阳娜娜", "Li Na"]


@pytest.mark.long
@pytest.mark.parametrize("codec", CODECS)
def test_a_million_random_frames(codec):
    """10^6 frames, a third of them damaged, fed in random chunks: the good ones all decode."""
    _, encode, decoder, max_frame = CODECS[codec]
    rng = random.Random(4)
    dec = decoder()
    good = damaged = decoded = 0
    for _ in range(1000):
        parts = []
        expect = 0
        for _ in range(1000):
            if codec == "zk":
                p = zk.ZkPacket(rng.randrange(65536), rng.randrange(65536), rng.randrange(65536),
                                os.urandom(rng.randrange(0, 40)))
            else:
                p = r30x.R30xPacket(rng.randrange(2**32), rng.choice([1, 2, 7, 8]),
                                    os.urandom(rng.randrange(1, 40)))
            raw = bytearray(encode(p))
            kind = rng.randrange(6)
            if kind == 0:
                raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
                damaged += 1
            elif kind == 1:
                raw = raw[:rng.randrange(1, len(raw))] + os.urandom(rng.randrange(0, 8))
                damaged += 1
            else:
                good += 1
                expect += 1
            parts.append(bytes(raw))
        stream = b"".join(parts)
        i = 0
        while i < len(stream):
            n = rng.randrange(1, 512)
            decoded += len(dec.feed(stream[i:i + n]))
            i += n
        assert len(dec._buf) <= max_frame
    decoded += len(dec.feed(b"\0" * max_frame))
    assert decoded >= good * 0.99  # a damaged frame may swallow its neighbour, never more
    assert dec.stats.dropped + dec.stats.garbage_bytes > 0
