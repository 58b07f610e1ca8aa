"""Onbon BX-5 LED controllers (仰邦 BX-5 系列): framing and the dynamic-area text command.

Frame on the wire::

    A5 A5 A5 A5 A5 A5 A5 A5 | escape(packet) | 5A

packet (little-endian fields)::

    DST u16 | SRC u16 | reserved 3 | option 1 | check mode 1 | display mode 1 |
    device type 1 | protocol version 1 | DATA_LEN u16 | DATA | CRC u16

- DST is the controller's bus address (1..254, 0xFFFE broadcast); the host is 0x8000.
- CRC is CRC-16/ARC (poly 0x8005 reflected, init 0) over DST..DATA, before escaping.
- Escaping inside the frame: A5 → A6 02, A6 → A6 01, 5A → 5B 02, 5B → 5B 01; so A5 and 5A
  only ever mark a frame's start and end.

DATA for "send dynamic area" (command group 0xA3, command 0x06)::

    A3 06 | response? 1 | reserved 2 | delete count 1 (0) | area count 1 (1) |
    AREA_LEN u16 | area id 1 | X u16 | Y u16 | W u16 | H u16 | display mode 1 |
    speed 1 | stay 1 | TEXT_LEN u32 | GBK text

A controller answers a command that asked for a response with DATA ``A0 00 | group | cmd |
status`` (status 0: done).

Provenance, honestly: the layout follows the BX-5 dynamic-area command of Onbon's (上海仰邦)
controller communication protocol for the BX-5/BX-6 series, the vendor document shipped with
its SDK. No independent implementation exists to check against: none on PyPI, none found in
public code, and no published capture of a real controller's frames was found, so the bytes of
the area header have not been checked against a physical controller. The only independent
vector is the CRC's: CRC-16/ARC of "123456789" is 0xBB3D in the catalogue of parametrised CRC
algorithms (tests/test_devices1_codecs.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HEAD = 0xA5
TAIL = 0x5A
HEAD_LEN = 8
HOST_ADDR = 0x8000
BROADCAST = 0xFFFE
DEVICE_TYPE = 0xFE  # "any controller"
PROTOCOL_VERSION = 0x02
MAX_PACKET = 2048  # a board's text never needs more; longer frames are noise
MAX_TEXT = 1024
HEADER = struct.Struct("<HH3sBBBBBH")  # up to and including DATA_LEN

CMD_DYNAMIC = (0xA3, 0x06)
CMD_ACK = (0xA0, 0x00)
AREA = struct.Struct("<BHHHHBBBI")

_ESC = {0xA5: b"\xa6\x02", 0xA6: b"\xa6\x01", 0x5A: b"\x5b\x02", 0x5B: b"\x5b\x01"}
_UNESC = {(0xA6, 0x02): 0xA5, (0xA6, 0x01): 0xA6, (0x5B, 0x02): 0x5A, (0x5B, 0x01): 0x5B}


def _arc_byte(b: int) -> int:
    crc = b
    for _ in range(8):
        crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


# Table-driven (one lookup per byte instead of 8 shifts): every board frame the box sends and
# the simulator checks goes through it, 250 frames a burst in a large hall.
_ARC_TABLE = [_arc_byte(b) for b in range(256)]


def crc16_arc(data: bytes) -> int:
    crc = 0
    table = _ARC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def escape(packet: bytes) -> bytes:
    # A6 and 5B first: the escapes they introduce start with them. Same result as a byte loop
    # over _ESC, done in C.
    return (packet.replace(b"\xa6", _ESC[0xA6]).replace(b"\xa5", _ESC[0xA5])
            .replace(b"\x5b", _ESC[0x5B]).replace(b"\x5a", _ESC[0x5A]))


def unescape(body: bytes) -> bytes:
    """Raises ValueError on a dangling or unknown escape."""
    out = bytearray()
    i = 0
    while i < len(body):
        b = body[i]
        if b in (0xA6, 0x5B):
            if i + 1 >= len(body) or (b, body[i + 1]) not in _UNESC:
                raise ValueError("bad escape")
            out.append(_UNESC[(b, body[i + 1])])
            i += 2
            continue
        out.append(b)
        i += 1
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    dst: int
    src: int
    data: bytes


def encode_packet(p: Packet) -> bytes:
    if len(p.data) > MAX_PACKET:
        raise ValueError("BX-5 data too long")
    head = HEADER.pack(p.dst, p.src, b"\0\0\0", 0, 0, 0, DEVICE_TYPE, PROTOCOL_VERSION,
                       len(p.data))
    body = head + p.data
    body += struct.pack("<H", crc16_arc(body))
    return bytes([HEAD]) * HEAD_LEN + escape(body) + bytes([TAIL])


@dataclass(frozen=True)
class DynamicText:
    address: int
    text: str
    area: int = 0
    x: int = 0
    y: int = 0
    width: int = 128
    height: int = 32
    mode: int = 1  # 1 static, 3 scroll left
    speed: int = 1
    stay: int = 10
    want_reply: bool = True


def encode_text(t: DynamicText) -> bytes:
    raw = t.text.encode("gbk", errors="replace")  # a sign shows "?", it never refuses a call
    if len(raw) > MAX_TEXT:
        raise ValueError(f"board text is {len(raw)} bytes; at most {MAX_TEXT}")
    area = AREA.pack(t.area, t.x, t.y, t.width, t.height, t.mode, t.speed, t.stay,
                     len(raw)) + raw
    data = bytes([*CMD_DYNAMIC, 1 if t.want_reply else 0, 0, 0, 0, 1]) + \
        struct.pack("<H", len(area)) + area
    return encode_packet(Packet(t.address, HOST_ADDR, data))


def encode_ack(address: int, group: int, cmd: int, status: int = 0) -> bytes:
    return encode_packet(Packet(HOST_ADDR, address, bytes([*CMD_ACK, group, cmd, status])))


def parse_text(p: Packet) -> DynamicText:
    """A dynamic-area packet back to its text; ValueError if it is not one."""
    d = p.data
    if len(d) < 9 or (d[0], d[1]) != CMD_DYNAMIC:
        raise ValueError("not a dynamic-area command")
    if d[5] != 0 or d[6] != 1:
        raise ValueError("expected one area and no deletions")
    (alen,) = struct.unpack_from("<H", d, 7)
    area = d[9:]
    if alen != len(area) or alen < AREA.size:
        raise ValueError("area length mismatch")
    aid, x, y, w, h, mode, speed, stay, tlen = AREA.unpack_from(area)
    raw = area[AREA.size:]
    if tlen != len(raw):
        raise ValueError("text length mismatch")
    return DynamicText(p.dst, raw.decode("gbk"), aid, x, y, w, h, mode, speed, stay,
                       bool(d[2]))


@dataclass
class DecoderStats:
    frames: int = 0
    garbage_bytes: int = 0
    bad_escape: int = 0
    bad_crc: int = 0
    bad_length: int = 0
    oversized: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_escape + self.bad_crc + self.bad_length + self.oversized


@dataclass
class Bx5Decoder:
    """Streaming: A5... opens a frame, 5A closes it; everything else between frames is noise."""

    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)
    _in_frame: bool = False

    def feed(self, chunk: bytes) -> list[Packet]:
        out: list[Packet] = []
        for b in chunk:
            if not self._in_frame:
                if b == HEAD:
                    self._in_frame = True
                    self._buf.clear()
                else:
                    self.stats.garbage_bytes += 1
                continue
            if b == HEAD:
                if self._buf:  # a new frame starts inside an unfinished one: drop the old
                    self.stats.bad_length += 1
                    self._buf.clear()
                continue  # repeated head bytes
            if b == TAIL:
                self._in_frame = False
                p = self._packet(bytes(self._buf))
                self._buf.clear()
                if p is not None:
                    out.append(p)
                continue
            if len(self._buf) >= 2 * MAX_PACKET + 32:
                self.stats.oversized += 1
                self._in_frame = False
                self._buf.clear()
                continue
            self._buf.append(b)
        return out

    def _packet(self, body: bytes) -> Packet | None:
        try:
            raw = unescape(body)
        except ValueError:
            self.stats.bad_escape += 1
            return None
        if len(raw) < HEADER.size + 2:
            self.stats.bad_length += 1
            return None
        dst, src, _r, _o, _c, _d, _t, _v, n = HEADER.unpack_from(raw)
        if n > MAX_PACKET:
            self.stats.oversized += 1
            return None
        if len(raw) != HEADER.size + n + 2:
            self.stats.bad_length += 1
            return None
        (crc,) = struct.unpack_from("<H", raw, HEADER.size + n)
        if crc != crc16_arc(raw[:HEADER.size + n]):
            self.stats.bad_crc += 1
            return None
        self.stats.frames += 1
        return Packet(dst, src, raw[HEADER.size:HEADER.size + n])
