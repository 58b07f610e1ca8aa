"""ZKTeco attendance terminal protocol over TCP (port 4370): a pure codec, no I/O.

Every TCP packet::

    50 50 82 7D  LEN(u32 LE)  |  CMD(u16) CHECKSUM(u16) SESSION(u16) REPLY(u16)  DATA...

LEN counts the 8-byte ZK header plus DATA. All integers are little-endian. CHECKSUM is the
ones' complement of the ones' complement sum (the Internet checksum, RFC 1071, over
little-endian words): 16-bit words of header+DATA (checksum field zeroed) added with end-around
carry, an odd last byte added alone as the low byte, then 0xFFFF − sum. SESSION is the id the
terminal gives in its CMD_CONNECT reply; REPLY is the client's counter, echoed in the reply.

Frames captured from a real terminal (a ZKTeco F19) and published in "Protocol Description of
ZKTeco's Standalone Devices" (A. Marin, github.com/adrobinoga/zk-protocol, protocol.md and
sections/*.md) are this codec's test vectors (tests/test_zk_interop.py), and the independent
client pyzk (PyPI) is run against the simulator built on it.

The conversation the box uses (driver: drivers.attendance):
  CMD_CONNECT → ACK_OK (session id in the header)
  CMD_USERTEMP_RRQ (FCT_USER) / CMD_ATTLOG_RRQ → PREPARE_DATA (u32 size) → DATA chunks … →
      ACK_OK; then CMD_FREE_DATA. The assembled data starts with its u32 size.
  CMD_REG_EVENT (u32 EF_ATTLOG) → ACK_OK; then the terminal sends CMD_REG_EVENT packets (the
      event flag in the SESSION field) for every punch, each acknowledged with ACK_OK.
  CMD_GET_TIME → ACK_OK + u32 ZK time (the link probe).
Records: users 72 bytes (names in the terminal's encoding, GBK on Chinese firmware), stored
punches 40 bytes, live punches 32 bytes (user id, verify, state, 6-byte time).

  Standard clients (the vendor SDK, pyzk) read through the terminal's buffer instead:
  CMD_PREPARE_BUFFER (1503, "CMD_DATA_WRRQ" in the manual; u8 1, u16 command, u32 fct,
  u32 ext) → CMD_DATA with the block inline when it is small, else ACK_OK with u8 0, u32 size…;
  then CMD_READ_BUFFER (1504, "CMD_DATA_RDY"; u32 offset, u32 length) per chunk → PREPARE_DATA,
  one DATA, ACK_OK under the request's reply number; CMD_FREE_DATA at the end.

Pyzk computes its request checksum before bumping the reply counter and sends the bumped one;
the two steps cancel (its 0xFFFE − sum over a word one smaller), so its frames are correct. This
codec checksums the bytes it actually sends and verifies what it receives, in ones' complement
arithmetic (0x0000 and 0xFFFF are both zero there, so either spelling of a zero sum passes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime

MAGIC = b"\x50\x50\x82\x7d"
HEADER = 8
MAX_PACKET = 64 * 1024  # ZK header + data; real terminals send ≤ 64 KiB per packet
USHRT_MAX = 0xFFFF

CMD_CONNECT = 1000
CMD_EXIT = 1001
CMD_ENABLEDEVICE = 1002
CMD_DISABLEDEVICE = 1003
CMD_ACK_OK = 2000
CMD_ACK_ERROR = 2001
CMD_ACK_DATA = 2002
CMD_ACK_UNAUTH = 2005
CMD_ACK_UNKNOWN = 0xFFFF
CMD_ACK_ERROR_DATA = 0xFFFB
CMD_PREPARE_DATA = 1500
CMD_DATA = 1501
CMD_FREE_DATA = 1502
CMD_PREPARE_BUFFER = 1503  # the manual's CMD_DATA_WRRQ: read a data set through the buffer
CMD_READ_BUFFER = 1504  # the manual's CMD_DATA_RDY: send one chunk of the prepared buffer
CMD_USERTEMP_RRQ = 9
CMD_OPTIONS_RRQ = 11
CMD_OPTIONS_WRQ = 12
CMD_ATTLOG_RRQ = 13
CMD_CLEAR_ATTLOG = 15
CMD_GET_FREE_SIZES = 50
CMD_STARTVERIFY = 60
CMD_CANCELCAPTURE = 62
CMD_STATE_RRQ = 64
CMD_GET_TIME = 201
CMD_SET_TIME = 202
CMD_REG_EVENT = 500
CMD_REFRESHDATA = 1013
CMD_REFRESHOPTION = 1014
CMD_GET_VERSION = 1100
EF_ATTLOG = 1
FCT_ATTLOG = 1
FCT_USER = 5

USER_SIZE = 72
ATT_SIZE = 40
LIVE_SIZE = 32

# Attendance states (the key pressed on the terminal, 考勤状态).
PUNCH_KINDS = {0: "check_in", 1: "check_out", 2: "break_out", 3: "break_in", 4: "overtime_in",
               5: "overtime_out"}


def _sum(buf: bytes) -> int:
    """Ones' complement sum of little-endian 16-bit words, folded into 0..0xFFFF."""
    n = len(buf) - len(buf) % 2
    total = sum(struct.unpack_from(f"<{n // 2}H", buf)) if n else 0
    if len(buf) % 2:
        total += buf[-1]
    while total > USHRT_MAX:
        total = (total & USHRT_MAX) + (total >> 16)
    return total


def checksum(buf: bytes) -> int:
    """The checksum of a ZK header + data whose checksum field is zero: 0xFFFF − folded sum."""
    return USHRT_MAX - _sum(buf)


def checksum_ok(body: bytes) -> bool:
    """A received header + data, checksum in place, sums to ones' complement zero (0xFFFF)."""
    return _sum(body) == USHRT_MAX


@dataclass(frozen=True)
class ZkPacket:
    command: int
    session: int
    reply: int
    data: bytes = b""


def encode(p: ZkPacket) -> bytes:
    if len(p.data) + HEADER > MAX_PACKET:
        raise ValueError(f"ZK packet data is {len(p.data)} bytes; at most {MAX_PACKET - HEADER}")
    for v in (p.command, p.session, p.reply):
        if not 0 <= v <= USHRT_MAX:
            raise ValueError("command, session and reply are 16-bit")
    body = struct.pack("<4H", p.command, 0, p.session, p.reply) + p.data
    cs = checksum(body)
    body = struct.pack("<4H", p.command, cs, p.session, p.reply) + p.data
    return MAGIC + struct.pack("<I", len(body)) + body


@dataclass
class ZkStats:
    packets: int = 0
    garbage_bytes: int = 0  # skipped while looking for the 50 50 82 7D magic
    bad_length: int = 0  # shorter than a ZK header or larger than MAX_PACKET
    bad_checksum: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_length + self.bad_checksum


@dataclass
class ZkDecoder:
    """Stream decoder for either direction: whole valid packets out, the rest counted."""

    stats: ZkStats = field(default_factory=ZkStats)
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> list[ZkPacket]:
        self._buf += chunk
        buf = self._buf
        out: list[ZkPacket] = []
        i = 0
        while True:
            j = buf.find(MAGIC, i)
            if j < 0:
                # Keep a possible magic prefix split across chunks.
                keep = next((k for k in (3, 2, 1) if len(buf) - i >= k
                             and MAGIC.startswith(bytes(buf[len(buf) - k:]))), 0)
                self.stats.garbage_bytes += len(buf) - i - keep
                i = len(buf) - keep
                break
            self.stats.garbage_bytes += j - i
            if len(buf) - j < 8:
                i = j
                break
            (length,) = struct.unpack_from("<I", buf, j + 4)
            if length < HEADER or length > MAX_PACKET:
                self.stats.bad_length += 1
                i = j + 1
                continue
            if len(buf) - j - 8 < length:
                i = j
                break
            body = bytes(buf[j + 8:j + 8 + length])
            cmd, _, session, reply = struct.unpack_from("<4H", body)
            if not checksum_ok(body):
                self.stats.bad_checksum += 1
                i = j + 1
                continue
            out.append(ZkPacket(cmd, session, reply, body[HEADER:]))
            self.stats.packets += 1
            i = j + 8 + length
        del buf[:i]
        return out


# ---- times ---------------------------------------------------------------------------------
def encode_time(t: datetime) -> int:
    """The terminal's packed local time (no time zone: the terminal's wall clock)."""
    return ((((t.year % 100) * 12 * 31 + (t.month - 1) * 31 + t.day - 1) * 24 * 60 * 60)
            + (t.hour * 60 + t.minute) * 60 + t.second)


def decode_time(v: int) -> datetime:
    second = v % 60
    v //= 60
    minute = v % 60
    v //= 60
    hour = v % 24
    v //= 24
    day = v % 31 + 1
    v //= 31
    month = v % 12 + 1
    v //= 12
    if v > 99:  # the terminal packs year % 100: a later year is no time it wrote
        raise ValueError(f"packed time {v + 2000} is past 2099")
    return datetime(v + 2000, month, day, hour, minute, second)  # raises on 31 Feb etc.


def encode_time6(t: datetime) -> bytes:
    return bytes([t.year - 2000, t.month, t.day, t.hour, t.minute, t.second])


def decode_time6(b: bytes) -> datetime:
    return datetime(b[0] + 2000, b[1], b[2], b[3], b[4], b[5])


# ---- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZkUser:
    uid: int  # the terminal's internal slot
    user_id: str  # the enrolment number staff type (工号)
    name: str
    privilege: int = 0
    password: str = ""
    card: int = 0
    group: int = 1


@dataclass(frozen=True)
class ZkPunch:
    user_id: str
    when: datetime  # the terminal's local wall-clock time
    status: int = 1  # verify mode: 0 password, 1 fingerprint, 2 card, 15 face
    punch: int = 0  # attendance state, PUNCH_KINDS
    uid: int = 0


def _text(raw: bytes, encoding: str) -> str:
    raw = raw.split(b"\0", 1)[0]
    return raw.decode(encoding, errors="replace").strip()


def _fixed(text: str, size: int, encoding: str) -> bytes:
    raw = text.encode(encoding)
    if len(raw) > size - 1:
        raise ValueError(f"{text!r} is longer than {size - 1} bytes in {encoding}")
    return raw.ljust(size, b"\0")


# The 72-byte user record as a real terminal sends it (zk-protocol, sections/data-user.md):
# slot, permission, password, name, card, group, "own time zones" flag, three time zones, user
# id. (pyzk reads bytes 40..46 as a group string; on the terminal they are the time zones.)
USER_FMT = "<HB8s24sIBH6s24s"
# The 40-byte stored punch: slot, user id, verify mode, time, state, then 8 bytes the captured
# records show as 00 00 00 00 FF 00 00 00 (zk-protocol, sections/data-record.md).
ATT_FMT = "<H24sBIB8s"
ATT_TAIL = b"\0\0\0\0\xff\0\0\0"


def pack_users(users: list[ZkUser], encoding: str = "gbk") -> bytes:
    body = b"".join(
        struct.pack(USER_FMT, u.uid, u.privilege, _fixed(u.password, 8, "ascii"),
                    _fixed(u.name, 24, encoding), u.card, u.group, 0, b"",
                    _fixed(u.user_id, 24, "ascii"))
        for u in users)
    return struct.pack("<I", len(body)) + body


def unpack_users(data: bytes, encoding: str = "gbk") -> tuple[list[ZkUser], int]:
    """Users from an assembled USERTEMP data block; (users, records that did not parse)."""
    body, bad = _sized(data, USER_SIZE)
    users = []
    for off in range(0, len(body) - len(body) % USER_SIZE, USER_SIZE):
        uid, priv, pw, name, card, group, _, _, uid_s = struct.unpack_from(USER_FMT, body, off)
        user_id = _text(uid_s, "ascii") or str(uid)
        users.append(ZkUser(uid, user_id, _text(name, encoding), priv, _text(pw, "ascii"),
                            card, group))
    return users, bad


def pack_attlog(punches: list[ZkPunch]) -> bytes:
    body = b"".join(
        struct.pack(ATT_FMT, p.uid, _fixed(p.user_id, 24, "ascii"), p.status,
                    encode_time(p.when), p.punch, ATT_TAIL)
        for p in punches)
    return struct.pack("<I", len(body)) + body


def unpack_attlog(data: bytes) -> tuple[list[ZkPunch], int]:
    """Stored punches from an assembled ATTLOG data block; (punches, records that failed)."""
    body, bad = _sized(data, ATT_SIZE)
    out = []
    for off in range(0, len(body) - len(body) % ATT_SIZE, ATT_SIZE):
        uid, user_id, status, t, punch, _ = struct.unpack_from(ATT_FMT, body, off)
        try:
            when = decode_time(t)
        except ValueError:
            bad += 1
            continue
        uid_s = _text(user_id, "ascii") or str(uid)
        out.append(ZkPunch(uid_s, when, status, punch, uid))
    return out, bad


def _sized(data: bytes, record: int) -> tuple[bytes, int]:
    """Strip the u32 size prefix; count a size that disagrees or a ragged tail as bad."""
    if len(data) < 4:
        return b"", 1 if data else 0
    (size,) = struct.unpack_from("<I", data)
    body = data[4:4 + size]
    bad = 0
    if size != len(data) - 4:
        bad += 1
    if len(body) % record:
        bad += 1
    return body, bad


def pack_live(p: ZkPunch) -> bytes:
    return struct.pack("<24sBB6s", _fixed(p.user_id, 24, "ascii"), p.status, p.punch,
                       encode_time6(p.when))


def unpack_live(data: bytes) -> ZkPunch:
    """A realtime EF_ATTLOG event (32-byte firmware layout; longer ones carry padding)."""
    if len(data) < LIVE_SIZE:
        raise ValueError(f"a live punch is at least {LIVE_SIZE} bytes, got {len(data)}")
    user_id, status, punch, t6 = struct.unpack_from("<24sBB6s", data)
    return ZkPunch(_text(user_id, "ascii"), decode_time6(t6), status, punch)
