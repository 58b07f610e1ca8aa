"""The ZK codec and terminal simulator against things nobody here wrote.

1. Frames captured from a real ZKTeco terminal (an F19) and published, byte for byte, in
   "Protocol Description of ZKTeco's Standalone Devices" by Alexander Marin,
   https://github.com/adrobinoga/zk-protocol — protocol.md ("Packet Fields", "Checksum"
   test vectors, "Realtime Packet Payload"), sections/terminal.md ("Generic Requests",
   "Set Device Info", "Get Device State"), sections/data-record.md ("Example of an Attendance
   Entry"), sections/data-user.md ("Example of a User Entry") and sections/realtime.md
   ("Attendance Realtime Log").
2. The checksum algorithm exactly as that document gives it in Python (transcribed below as
   `reference_checksum`), compared with ours on any input.
3. The independent client pyzk (PyPI `pyzk`, import `zk`) run against the simulator on loopback
   TCP through a relay that records every byte, each frame then checked with the reference
   checksum: a standard client's connect, firmware, options, counters, user list, attendance log
   (large enough for chunked buffered reads), live capture and disconnect.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zk import ZK

from drivers.protocols import zk
from drivers.sim.zk_terminal import ZkTerminalSim


def reference_checksum(payload: bytes) -> int:
    """zk-protocol protocol.md, "Checksum", its Python listing (payload without checksum)."""
    data = list(payload)
    chk_32b = 0
    j = 1
    if len(data) % 2 == 1:
        data += [0x00]
    while j < len(data):
        chk_32b = chk_32b + data[j - 1] + (data[j] << 8)
        j += 2
    chk_32b = (chk_32b & 0xFFFF) + ((chk_32b & 0xFFFF0000) >> 16)
    # The listing folds once; when that fold carries again (e.g. a sum of 0x1FFFF) RFC 1071
    # folds a second time. This line is the only one added to the published listing.
    chk_32b = (chk_32b & 0xFFFF) + (chk_32b >> 16)
    return chk_32b ^ 0xFFFF


def hexdump(lines: str) -> bytes:
    """The bytes of an `xxd`-style dump as the document prints it (offset, 16 bytes, text)."""
    out = b""
    for line in lines.strip().splitlines():
        _, rest = line.split(":", 1)
        out += bytes.fromhex(rest[:50].replace(" ", ""))
    return out


# (name, bytes, command, session, reply, data) — each a frame a real terminal or its vendor
# software put on the wire.
CAPTURED = [
    ("regular packet ~OS (protocol.md)", hexdump("""
        00000000: 50 50 82 7D 0C 00 00 00  0B 00 58 EF C5 C0 05 00  PP.}......X.....
        00000010: 7E 4F 53 00"""), zk.CMD_OPTIONS_RRQ, 0xC0C5, 5, b"~OS\0"),
    ("get ~Platform request (terminal.md)", hexdump("""
        00000000: 50 50 82 7D 12 00 00 00  0B 00 B9 E6 F3 8D 0C 00  PP.}............
        00000010: 7E 50 6C 61 74 66 6F 72  6D 00                    ~Platform."""),
     zk.CMD_OPTIONS_RRQ, 0x8DF3, 12, b"~Platform\0"),
    ("~Platform reply from the terminal (terminal.md)", hexdump("""
        00000000: 50 50 82 7D 1D 00 00 00  D0 07 71 4C F3 8D 0C 00  PP.}......qL....
        00000010: 7E 50 6C 61 74 66 6F 72  6D 3D 5A 45 4D 37 36 30  ~Platform=ZEM760
        00000020: 5F 54 46 54 00                                    _TFT."""),
     zk.CMD_ACK_OK, 0x8DF3, 12, b"~Platform=ZEM760_TFT\0"),
    ("get WorkCode request (terminal.md)", hexdump("""
        00000000: 50 50 82 7D 11 00 00 00  0B 00 84 C2 F3 8D 0B 00  PP.}............
        00000010: 57 6F 72 6B 43 6F 64 65  00                       WorkCode."""),
     zk.CMD_OPTIONS_RRQ, 0x8DF3, 11, b"WorkCode\0"),
    ("WorkCode reply from the terminal (terminal.md)", hexdump("""
        00000000: 50 50 82 7D 13 00 00 00  D0 07 82 8A F3 8D 0B 00  PP.}..........
        00000010: 57 6F 72 6B 43 6F 64 65  3D 30 00                 WorkCode=0."""),
     zk.CMD_ACK_OK, 0x8DF3, 11, b"WorkCode=0\0"),
    ("set LockOn=5 (terminal.md)", hexdump("""
        00000000: 50 50 82 7D 11 00 00 00  0C 00 EB BB 84 C5 47 00  PP.}..........G.
        00000010: 4C 6F 63 6B 4F 6E 3D 35  00                       LockOn=5."""),
     zk.CMD_OPTIONS_WRQ, 0xC584, 0x47, b"LockOn=5\0"),
    ("set AntiPassbackOn=0 (terminal.md)", hexdump("""
        00000000: 50 50 82 7D 19 00 00 00  0C 00 60 22 84 C5 43 00  PP.}......`"..C.
        00000010: 41 6E 74 69 50 61 73 73  62 61 63 6B 4F 6E 3D 30  AntiPassbackOn=0
        00000020: 00                                                ."""),
     zk.CMD_OPTIONS_WRQ, 0xC584, 0x43, b"AntiPassbackOn=0\0"),
    ("state reply, state 2 in the session field (terminal.md)", hexdump("""
        00000000: 50 50 82 7D 08 00 00 00  D0 07 F6 F7 02 00 37 00  PP.}..........7."""),
     zk.CMD_ACK_OK, 2, 0x37, b""),
    ("realtime EF_FPFTR event (protocol.md)", hexdump("""
        00000000: 50 50 82 7D 09 00 00 00  F4 01 A7 FC 00 01 00 00  PP.}............
        00000010: 64"""), zk.CMD_REG_EVENT, 0x0100, 0, b"\x64"),
    ("realtime attendance event (realtime.md)", hexdump("""
        00000000: 50 50 82 7D 28 00 00 00  F4 01 AC 12 01 00 00 00  PP.}(...........
        00000010: 39 39 39 31 31 31 33 33  33 00 00 00 00 00 00 00  999111333.......
        00000020: 00 00 00 00 00 00 00 00  01 00 12 06 19 11 29 05  ..............)."""),
     zk.CMD_REG_EVENT, zk.EF_ATTLOG, 0, b"999111333" + b"\0" * 15 + bytes.fromhex(
         "0100120619112905")),
]

# The two payload-only test vectors of protocol.md "Checksum": (payload, checksum).
PAYLOAD_VECTORS = [
    (bytes.fromhex("0b005a17f38d03005a4b4661636556657273696f6e00"), 0x175A),
    (bytes.fromhex("d007296af38d0a0009"), 0x6A29),  # a real CMD_ACK_OK reply, odd length
]


@pytest.mark.parametrize("name,raw,command,session,reply,data", CAPTURED,
                         ids=[c[0] for c in CAPTURED])
def test_captured_frames_decode_and_encode_byte_for_byte(name, raw, command, session, reply,
                                                          data):
    dec = zk.ZkDecoder()
    assert dec.feed(raw) == [zk.ZkPacket(command, session, reply, data)], name
    assert dec.stats.dropped == 0
    assert zk.encode(zk.ZkPacket(command, session, reply, data)) == raw


@pytest.mark.parametrize("payload,expected", PAYLOAD_VECTORS)
def test_published_checksum_vectors(payload, expected):
    assert struct.unpack_from("<H", payload, 2)[0] == expected
    assert zk.checksum_ok(payload)
    assert zk.checksum(payload[:2] + b"\0\0" + payload[4:]) == expected
    # The pre-fix formula (0xFFFE − sum) refused every one of them: one less.
    assert zk.checksum(payload[:2] + b"\0\0" + payload[4:]) - 1 != expected


def test_captured_attendance_entry():
    """sections/data-record.md: slot 0x000D, user "999111333", verify 1, time 0x2368B36B."""
    entry = hexdump("""
        00000000: 0D 00 39 39 39 31 31 31  33 33 33 00 00 00 00 00  ..999111333.....
        00000010: 00 00 00 00 00 00 00 00  00 00 01 6B B3 68 23 00  ...........k.h#.
        00000020: 00 00 00 00 FF 00 00 00                           ........""")
    punches, bad = zk.unpack_attlog(struct.pack("<I", len(entry)) + entry)
    assert bad == 0
    # 2018-06-25 17:50:35, minutes after the realtime event of the same capture (17:41:05).
    assert punches == [zk.ZkPunch("999111333", datetime(2018, 6, 25, 17, 50, 35), 1, 0, 13)]
    assert zk.pack_attlog(punches)[4:] == entry


def test_captured_user_entry():
    """sections/data-user.md: slot 0x0D, password "444" (junk after its NUL), name "Ned",
    card 0xDE, group 2, own time zones 1 and 2, user id "555"."""
    entry = hexdump("""
        00000000: 0D 00 00 34 34 34 00 C6  9A 80 7C 4E 65 64 00 00  ...444....|Ned..
        00000010: 00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  ................
        00000020: 00 00 00 DE 00 00 00 02  01 00 01 00 02 00 00 00  ................
        00000030: 35 35 35 00 00 00 00 00  00 00 00 00 00 00 00 00  555.............
        00000040: 00 00 00 00 00 00 00 00                           ........""")
    users, bad = zk.unpack_users(struct.pack("<I", len(entry)) + entry, "ascii")
    assert bad == 0
    assert users == [zk.ZkUser(13, "555", "Ned", 0, "444", 0xDE, 2)]


def test_captured_live_punch():
    raw = next(c[1] for c in CAPTURED if c[0].startswith("realtime attendance"))
    (p,) = zk.ZkDecoder().feed(raw)
    assert zk.unpack_live(p.data) == zk.ZkPunch("999111333", datetime(2018, 6, 25, 17, 41, 5),
                                                1, 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=8, max_size=600))
def test_checksum_is_the_published_algorithm(body):
    body = body[:2] + b"\0\0" + body[4:]
    assert zk.checksum(body) == reference_checksum(body) or \
        {zk.checksum(body), reference_checksum(body)} == {0, 0xFFFF}  # ±0 in ones' complement
    framed = zk.MAGIC + struct.pack("<I", len(body)) + body[:2] + \
        struct.pack("<H", zk.checksum(body)) + body[4:]
    assert zk.ZkDecoder().feed(framed) != []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 0xFFFF), st.integers(1, 0xFFFF))
def test_a_changed_checksum_is_refused(data, session, delta):
    raw = bytearray(zk.encode(zk.ZkPacket(zk.CMD_ACK_OK, session, 1, data)))
    cs = struct.unpack_from("<H", raw, 10)[0]
    new = (cs + delta) & 0xFFFF
    if {cs, new} == {0, 0xFFFF}:
        return  # the other spelling of the same ones' complement value
    struct.pack_into("<H", raw, 10, new)
    dec = zk.ZkDecoder()
    assert dec.feed(bytes(raw)) == [] and dec.stats.bad_checksum >= 1


# ---- pyzk against the simulator ------------------------------------------------------------
USERS = [zk.ZkUser(1, "1001", "王芳"), zk.ZkUser(2, "1002", "李娜", privilege=14, password="1234"),
         zk.ZkUser(3, "2001", "张喆", card=4455667)]


class Hall:
    """The simulator and a byte-recording relay in front of it, on a loop in its own thread
    (pyzk is a blocking client)."""

    def __init__(self, sim: ZkTerminalSim) -> None:
        self.sim = sim
        self.to_terminal = bytearray()
        self.to_client = bytearray()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(self._start())

    def call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore

    def soon(self, fn: object, *args: object) -> None:
        self.loop.call_soon_threadsafe(fn, *args)  # type: ignore

    async def _start(self) -> int:
        await self.sim.start()
        self.relay = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return self.relay.sockets[0].getsockname()[1]

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.sim.port)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       log: bytearray) -> None:
            try:
                while chunk := await src.read(65536):
                    log += chunk
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(r, uw, self.to_terminal), copy(ur, w, self.to_client))

    async def _stop(self) -> None:
        self.relay.close()
        await self.sim.stop()

    def close(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def frames(stream: bytes) -> Iterator[bytes]:
    """Split a recorded TCP stream into ZK bodies by the reference framing (magic + length)."""
    i = 0
    while i < len(stream):
        assert stream[i:i + 4] == zk.MAGIC, f"junk at {i}: {stream[i:i + 16].hex()}"
        (n,) = struct.unpack_from("<I", stream, i + 4)
        yield stream[i + 8:i + 8 + n]
        i += 8 + n


def reference_valid(body: bytes) -> bool:
    return struct.unpack_from("<H", body, 2)[0] == reference_checksum(body[:2] + b"\0\0" + body[4:])


@pytest.fixture
def hall():
    sim = ZkTerminalSim(USERS)
    h = Hall(sim)
    yield h
    h.close()


def test_pyzk_reads_info_users_and_a_chunked_attendance_log(hall):
    sim = hall.sim
    base = datetime(2026, 11, 2, 8, 0, 0)
    # 2000 stored punches = 80,004 bytes: two 0xFFC0-byte chunks of pyzk's buffered read.
    for i in range(2000):
        sim.records.append(zk.ZkPunch(USERS[i % 3].user_id, base + timedelta(minutes=7 * i),
                                      status=1 if i % 5 else 15, punch=i % 2, uid=i % 3 + 1))
    client = ZK("127.0.0.1", port=hall.port, timeout=5, ommit_ping=True, encoding="gbk")
    conn = client.connect()
    try:
        assert conn.get_firmware_version() == "Ver 6.60 Nov 13 2019"
        assert conn.get_serialnumber() == sim.options["~SerialNumber"]
        assert conn.get_platform() == "ZEM560"
        assert conn.get_device_name() == "F18"
        assert conn.get_mac() == "00:17:61:c8:3a:12"
        assert conn.get_fp_version() == 10
        assert conn.get_face_version() is None  # a fingerprint-only terminal: ACK_ERROR
        assert conn.get_network_params()["ip"] == "127.0.0.1"
        conn.read_sizes()
        assert (conn.users, conn.records, conn.users_cap, conn.rec_av) == (3, 2000, 3000, 98000)
        conn.disable_device()
        assert not sim.enabled
        users = conn.get_users()
        assert [(u.uid, u.user_id, u.name, u.privilege, u.password, u.card) for u in users] == [
            (1, "1001", "王芳", 0, "", 0), (2, "1002", "李娜", 14, "1234", 0),
            (3, "2001", "张喆", 0, "", 4455667)]
        log = conn.get_attendance()
        conn.enable_device()
        assert sim.enabled
        t = conn.get_time()
        assert abs((t - datetime.now()).total_seconds()) < 5
    finally:
        conn.disconnect()
    assert len(log) == 2000
    assert [(a.user_id, a.timestamp, a.status, a.punch) for a in log] == [
        (p.user_id, p.when, p.status, p.punch) for p in sim.records]
    assert sim.unanswered == [] and sim.bad_packets == 0
    # Every byte both ways, split by the published framing, carries the published checksum.
    sent, got = list(frames(bytes(hall.to_terminal))), list(frames(bytes(hall.to_client)))
    assert all(reference_valid(b) for b in sent) and all(reference_valid(b) for b in got)
    commands = [struct.unpack_from("<H", b)[0] for b in sent]
    # The attendance log went through the buffer in chunks: two READ_BUFFER, then FREE_DATA.
    assert commands.count(zk.CMD_READ_BUFFER) == 2 and zk.CMD_FREE_DATA in commands
    chunks = [b for b in got if struct.unpack_from("<H", b)[0] == zk.CMD_DATA]
    assert sorted(len(b) - 8 for b in chunks)[-2:] == [80004 - 0xFFC0, 0xFFC0]


def test_pyzk_live_capture_and_a_cancelled_capture(hall):
    sim = hall.sim
    client = ZK("127.0.0.1", port=hall.port, timeout=5, ommit_ping=True, encoding="gbk")
    conn = client.connect()
    try:
        conn.cancel_capture()
        assert not sim.verifying
        with pytest.raises(RuntimeError):
            sim.punch("1001")  # the terminal identifies no finger while capture is cancelled
        gen = conn.live_capture(new_timeout=1)
        assert next(gen) is None  # registered (STARTVERIFY, REG_EVENT); nothing happened yet
        assert sim.verifying
        # One finger at a time, as at a real terminal (pyzk reads one event per recv()).
        fingers = [("1002", datetime(2026, 11, 2, 8, 59, 58), 0, 1),
                   ("2001", datetime(2026, 11, 2, 12, 0, 5), 1, 15)]
        hall.soon(sim.punch, *fingers.pop(0))
        seen = []
        for a in gen:
            if a is not None:
                seen.append((a.user_id, a.timestamp, a.status, a.punch, a.uid))
                if fingers:
                    hall.soon(sim.punch, *fingers.pop(0))
            if len(seen) == 2:
                conn.end_live_capture = True
        assert seen == [("1002", datetime(2026, 11, 2, 8, 59, 58), 1, 0, 2),
                        ("2001", datetime(2026, 11, 2, 12, 0, 5), 15, 1, 3)]
    finally:
        conn.disconnect()
    assert sim.unanswered == [] and sim.bad_packets == 0
    # pyzk's acks of the live events (reply id 65534 bumped to 0) pass the published check.
    assert all(reference_valid(b) for b in frames(bytes(hall.to_terminal)))
    assert all(reference_valid(b) for b in frames(bytes(hall.to_client)))


@pytest.fixture(scope="module")
def fuzz_hall():
    h = Hall(ZkTerminalSim(USERS))
    yield h
    h.close()


def _read_packet(sock: object, dec: zk.ZkDecoder, queue: list[zk.ZkPacket]) -> zk.ZkPacket:
    while not queue:
        chunk = sock.recv(65536)  # type: ignore[attr-defined]
        assert chunk, "the terminal closed the connection"
        queue += dec.feed(chunk)
    return queue.pop(0)


@settings(max_examples=120, deadline=None)
@given(st.one_of(st.sampled_from([zk.CMD_USERTEMP_RRQ, zk.CMD_ATTLOG_RRQ, zk.CMD_PREPARE_BUFFER,
                                   zk.CMD_READ_BUFFER, zk.CMD_OPTIONS_RRQ, zk.CMD_OPTIONS_WRQ,
                                   zk.CMD_SET_TIME, zk.CMD_GET_FREE_SIZES]),
                 st.integers(0, 0xFFFF)).filter(
           lambda c: c not in (zk.CMD_EXIT, zk.CMD_ACK_OK, zk.CMD_CONNECT, zk.CMD_REG_EVENT,
                               zk.CMD_CLEAR_ATTLOG)),
       st.binary(max_size=64), st.integers(1, 0xFFFE))
def test_any_request_gets_one_well_formed_answer(fuzz_hall, command, data, reply):
    """Whatever a client sends after CMD_CONNECT, the terminal stays up and answers once,
    under the request's reply number (a data request: PREPARE/DATA…/ACK, all under it)."""
    import socket
    with socket.create_connection(("127.0.0.1", fuzz_hall.port), timeout=5) as s:
        dec, queue = zk.ZkDecoder(), []
        s.sendall(zk.encode(zk.ZkPacket(zk.CMD_CONNECT, 0, 0)))
        session = _read_packet(s, dec, queue).session
        s.sendall(zk.encode(zk.ZkPacket(command, session, reply, data)))
        p = _read_packet(s, dec, queue)
        assert p.reply == reply
        if p.command == zk.CMD_PREPARE_DATA:  # a transfer: DATA packets, then ACK_OK
            while p.command != zk.CMD_ACK_OK:
                p = _read_packet(s, dec, queue)
                assert p.reply == reply and p.command in (zk.CMD_DATA, zk.CMD_ACK_OK)
        s.sendall(zk.encode(zk.ZkPacket(zk.CMD_EXIT, session, reply % 0xFFFE + 1)))
        assert _read_packet(s, dec, queue).command == zk.CMD_ACK_OK
        assert not queue and dec.stats.dropped == 0
