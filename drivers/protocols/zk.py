"""ZKTeco attendance terminal protocol over TCP (port 4370): a pure codec, no I/O.

Every TCP packet::

    50 50 82 7D  LEN(u32 LE)  |  CMD(u16) CHECKSUM(u16) SESSION(u16) REPLY(u16)  DATA...

LEN counts the 8-byte ZK header plus DATA. All integers are little-endian. CHECKSUM is the
zkemsdk sum: 16-bit little-endian words of header+DATA (checksum field zeroed) added with
end-around folding at 0xFFFF, an odd last byte added alone, then complemented. SESSION is the id
the terminal gives in its CMD_CONNECT reply; REPLY is the client's counter, echoed in the reply.

The conversation the box uses (driver: drivers.attendance):
  CMD_CONNECT → ACK_OK (session id in the header)
  CMD_USERTEMP_RRQ (FCT_USER) / CMD_ATTLOG_RRQ → PREPARE_DATA (u32 size) → DATA chunks … →
      ACK_OK; then CMD_FREE_DATA. The assembled data starts with its u32 size.
  CMD_REG_EVENT (u32 EF_ATTLOG) → ACK_OK; then the terminal sends CMD_REG_EVENT packets (the
      event flag in the SESSION field) for every punch, each acknowledged with ACK_OK.
  CMD_GET_TIME → ACK_OK + u32 ZK time (the link probe).
Records: users 72 bytes (names in the terminal's encoding, GBK on Chinese firmware), stored
punches 40 bytes, live punches 32 bytes (user id, verify, state, 6-byte time).

Pyzk computes its request checksums before bumping the reply counter; this codec checksums the
bytes it actually sends and verifies what it receives.
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
CMD_PREPARE_DATA = 1500
CMD_DATA = 1501
CMD_FREE_DATA = 1502
CMD_USERTEMP_RRQ = 9
CMD_ATTLOG_RRQ = 13
CMD_GET_TIME = 201
CMD_REG_EVENT = 500
EF_ATTLOG = 1
FCT_USER = 5

USER_SIZE = 72
ATT_SIZE = 40
LIVE_SIZE = 32

# Attendance states (the key pressed on the terminal, 考勤状态).
PUNCH_KINDS = {0: "check_in", 1: "check_out", 2: "break_out", 3: "break_in", 4: "overtime_in",
               5: "overtime_out"}


def checksum(buf: bytes) -> int:
    """zkemsdk checksum of a ZK header + data whose checksum field is zero."""
    total = 0
    n = len(buf) - len(buf) % 2
    for i in range(0, n, 2):
        total += buf[i] | buf[i + 1] << 8
        if total > USHRT_MAX:
            total -= USHRT_MAX
    if len(buf) % 2:
        total += buf[-1]
    while total > USHRT_MAX:
        total -= USHRT_MAX
    total = ~total
    while total < 0:
        total += USHRT_MAX
    return total


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
            cmd, cs, session, reply = struct.unpack_from("<4H", body)
            if checksum(body[:2] + b"\0\0" + body[4:]) != cs:
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
    group: str = "1"


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


def pack_users(users: list[ZkUser], encoding: str = "gbk") -> bytes:
    body = b"".join(
        struct.pack("<HB8s24sIx7sx24s", u.uid, u.privilege, _fixed(u.password, 8, "ascii"),
                    _fixed(u.name, 24, encoding), u.card, _fixed(u.group, 7, "ascii"),
                    _fixed(u.user_id, 24, "ascii"))
        for u in users)
    return struct.pack("<I", len(body)) + body


def unpack_users(data: bytes, encoding: str = "gbk") -> tuple[list[ZkUser], int]:
    """Users from an assembled USERTEMP data block; (users, records that did not parse)."""
    body, bad = _sized(data, USER_SIZE)
    users = []
    for off in range(0, len(body) - len(body) % USER_SIZE, USER_SIZE):
        uid, priv, pw, name, card, group, uid_s = struct.unpack_from(
            "<HB8s24sIx7sx24s", body, off)
        user_id = _text(uid_s, "ascii") or str(uid)
        users.append(ZkUser(uid, user_id, _text(name, encoding), priv, _text(pw, "ascii"),
                            card, _text(group, "ascii")))
    return users, bad


def pack_attlog(punches: list[ZkPunch]) -> bytes:
    body = b"".join(
        struct.pack("<H24sBIB8s", p.uid, _fixed(p.user_id, 24, "ascii"), p.status,
                    encode_time(p.when), p.punch, b"\0" * 8)
        for p in punches)
    return struct.pack("<I", len(body)) + body


def unpack_attlog(data: bytes) -> tuple[list[ZkPunch], int]:
    """Stored punches from an assembled ATTLOG data block; (punches, records that failed)."""
    body, bad = _sized(data, ATT_SIZE)
    out = []
    for off in range(0, len(body) - len(body) % ATT_SIZE, ATT_SIZE):
        uid, user_id, status, t, punch, _ = struct.unpack_from("<H24sBIB8s", body, off)
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
