"""R30x / AS608 / R503 fingerprint sensor packets over UART (57600 8N1): a pure codec.

Packet (all multi-byte fields big-endian)::

    EF 01  ADDR(4)  PID(1)  LEN(2)  PAYLOAD...  SUM(2)

- ADDR: the module address, FF FF FF FF from the factory.
- PID: 01 command, 02 data (more follows), 07 acknowledgement, 08 last data packet.
- LEN: bytes of PAYLOAD + 2 (the checksum).
- SUM: (PID + both LEN bytes + every PAYLOAD byte) mod 65536.

A command's PAYLOAD is the instruction code and its parameters; an acknowledgement's is the
confirmation code and its results. The box uses: VfyPwd, ReadSysPara, TemplateNum, GenImg,
Img2Tz (into CharBuffer 1 or 2), RegModel, Store, Search, DeletChar, Empty. Standard clients
also use Match (1:1 of the two buffers → score), LoadChar (library page → buffer), UpChar
(buffer → host: an ack, then DATA packets of the module's packet size, the last one END),
DownChar (host → buffer: an ack, then the host's DATA…END packets, no further ack),
GetRandomCode, SetSysPara (4 baud N×9600, 5 security level 1..5, 6 packet size 32·2^n) and
ReadIndexTable (page 0..3 → 32 bytes, bit n of byte i = template page·256 + 8i + n).

Source of the layout: the vendor's "R30x Series Fingerprint Identification Module User Manual"
(Hangzhou Grow / Zhian ZFM series). The independent client pyfingerprint (PyPI) runs its enrol,
search, upload/download and system-parameter flows against the simulator built on this codec
(tests/test_r30x_interop.py).

Enrol: GenImg, Img2Tz 1, (lift, place again) GenImg, Img2Tz 2, RegModel, Store 1 → page.
Identify: GenImg, Img2Tz 1, Search 1 over the library → page and score.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

HEADER = b"\xef\x01"
DEFAULT_ADDRESS = 0xFFFFFFFF
MAX_PAYLOAD = 256  # the largest data packet size the modules support
MIN_LEN = 3  # one payload byte + the checksum


class Pid(IntEnum):
    COMMAND = 0x01
    DATA = 0x02
    ACK = 0x07
    END = 0x08


class Instr(IntEnum):
    GEN_IMG = 0x01
    IMG2TZ = 0x02
    MATCH = 0x03
    SEARCH = 0x04
    REG_MODEL = 0x05
    STORE = 0x06
    LOAD_CHAR = 0x07
    UP_CHAR = 0x08
    DOWN_CHAR = 0x09
    DELETE_CHAR = 0x0C
    EMPTY = 0x0D
    SET_SYS_PARA = 0x0E
    READ_SYS_PARA = 0x0F
    VFY_PWD = 0x13
    GET_RANDOM_CODE = 0x14
    TEMPLATE_NUM = 0x1D
    READ_INDEX_TABLE = 0x1F


class Confirm(IntEnum):
    OK = 0x00
    PACKET_ERROR = 0x01
    NO_FINGER = 0x02
    ENROLL_FAIL = 0x03
    IMAGE_MESSY = 0x06
    FEW_FEATURES = 0x07
    NO_MATCH = 0x08
    NOT_FOUND = 0x09
    COMBINE_FAIL = 0x0A
    BAD_LOCATION = 0x0B
    LOAD_ERROR = 0x0C
    UPLOAD_ERROR = 0x0D
    RECEIVE_ERROR = 0x0E
    WRONG_PASSWORD = 0x13
    NO_IMAGE = 0x15
    FLASH_ERROR = 0x18
    BAD_REGISTER = 0x1A


CONFIRM_TEXT = {
    Confirm.OK: "ok", Confirm.PACKET_ERROR: "packet receive error",
    Confirm.NO_FINGER: "no finger on the sensor", Confirm.ENROLL_FAIL: "could not take image",
    Confirm.IMAGE_MESSY: "image too messy", Confirm.FEW_FEATURES: "too few features",
    Confirm.NO_MATCH: "fingers do not match", Confirm.NOT_FOUND: "no matching template",
    Confirm.COMBINE_FAIL: "the two images are not the same finger",
    Confirm.BAD_LOCATION: "page out of range", Confirm.WRONG_PASSWORD: "wrong password",
    Confirm.LOAD_ERROR: "template could not be read", Confirm.UPLOAD_ERROR: "upload failed",
    Confirm.RECEIVE_ERROR: "cannot receive the data packets",
    Confirm.NO_IMAGE: "no valid image in the buffer", Confirm.FLASH_ERROR: "flash write error",
    Confirm.BAD_REGISTER: "no such system parameter",
}

SYS_BAUD, SYS_SECURITY, SYS_PACKET_SIZE = 4, 5, 6  # SetSysPara parameter numbers
PACKET_SIZES = (32, 64, 128, 256)  # packet size code 0..3
CHAR_FILE = 512  # bytes of a buffer's character file / template moved by UpChar and DownChar


def confirm_text(code: int) -> str:
    try:
        return CONFIRM_TEXT[Confirm(code)]
    except (ValueError, KeyError):
        return f"confirmation code 0x{code:02X}"


@dataclass(frozen=True)
class R30xPacket:
    address: int
    pid: int
    payload: bytes

    @property
    def code(self) -> int:
        """Instruction (command) or confirmation code (acknowledgement)."""
        return self.payload[0]

    @property
    def params(self) -> bytes:
        return self.payload[1:]


def checksum(pid: int, length: int, payload: bytes) -> int:
    return (pid + (length >> 8) + (length & 0xFF) + sum(payload)) & 0xFFFF


def encode(p: R30xPacket) -> bytes:
    if not 1 <= len(p.payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes, got {len(p.payload)}")
    if not 0 <= p.address <= 0xFFFFFFFF or not 0 <= p.pid <= 0xFF:
        raise ValueError("address is 32-bit, pid 8-bit")
    length = len(p.payload) + 2
    return (HEADER + struct.pack(">IBH", p.address, p.pid, length) + p.payload
            + struct.pack(">H", checksum(p.pid, length, p.payload)))


def command(instr: int, params: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    return encode(R30xPacket(address, Pid.COMMAND, bytes([instr]) + params))


def ack(code: int, results: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    return encode(R30xPacket(address, Pid.ACK, bytes([code]) + results))


# ---- commands with parameters --------------------------------------------------------------
def img2tz(buffer: int) -> bytes:
    return bytes([buffer])


def store(buffer: int, page: int) -> bytes:
    return struct.pack(">BH", buffer, page)


def search(buffer: int, start: int, count: int) -> bytes:
    return struct.pack(">BHH", buffer, start, count)


def delete(page: int, count: int = 1) -> bytes:
    return struct.pack(">HH", page, count)


def password(pw: int) -> bytes:
    return struct.pack(">I", pw)


def load_char(buffer: int, page: int) -> bytes:
    return struct.pack(">BH", buffer, page)


def sys_para(number: int, value: int) -> bytes:
    return bytes([number, value])


def data_packets(data: bytes, size: int, address: int = DEFAULT_ADDRESS) -> bytes:
    """A transfer as a module or host sends it: DATA packets of `size` bytes, the last one END."""
    if size not in PACKET_SIZES:
        raise ValueError(f"packet size is one of {PACKET_SIZES}, got {size}")
    if not data:
        raise ValueError("a transfer carries at least one byte")
    parts = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(encode(R30xPacket(address, Pid.END if i == len(parts) - 1 else Pid.DATA, part))
                    for i, part in enumerate(parts))


def parse_index_table(page: int, results: bytes) -> list[int]:
    """ReadIndexTable results (32 bytes) → the used template pages, in order."""
    if len(results) != 32:
        raise ValueError(f"an index table page is 32 bytes, got {len(results)}")
    return [page * 256 + i * 8 + bit for i, byte in enumerate(results) for bit in range(8)
            if byte >> bit & 1]


def index_table(page: int, used: set[int] | list[int]) -> bytes:
    """The 32-byte ReadIndexTable answer for page 0..3 of a library."""
    table = bytearray(32)
    for n in used:
        if page * 256 <= n < (page + 1) * 256:
            i = n - page * 256
            table[i // 8] |= 1 << (i % 8)
    return bytes(table)


def parse_search(results: bytes) -> tuple[int, int]:
    """Search results → (page, match score)."""
    if len(results) < 4:
        raise ValueError("search results are page(2) + score(2)")
    page, score = struct.unpack_from(">HH", results)
    return page, score


@dataclass
class R30xStats:
    packets: int = 0
    garbage_bytes: int = 0
    bad_length: int = 0
    bad_checksum: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_length + self.bad_checksum


@dataclass
class R30xDecoder:
    """Stream decoder: whole valid packets out; garbage, bad lengths and sums counted."""

    stats: R30xStats = field(default_factory=R30xStats)
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> list[R30xPacket]:
        self._buf += chunk
        buf = self._buf
        out: list[R30xPacket] = []
        i = 0
        while True:
            j = buf.find(HEADER, i)
            if j < 0:
                keep = 1 if len(buf) > i and buf[-1] == HEADER[0] else 0
                self.stats.garbage_bytes += len(buf) - i - keep
                i = len(buf) - keep
                break
            self.stats.garbage_bytes += j - i
            if len(buf) - j < 9:
                i = j
                break
            address, pid, length = struct.unpack_from(">IBH", buf, j + 2)
            if length < MIN_LEN or length > MAX_PAYLOAD + 2 or pid not in (1, 2, 7, 8):
                self.stats.bad_length += 1
                i = j + 1
                continue
            total = 9 + length
            if len(buf) - j < total:
                i = j
                break
            payload = bytes(buf[j + 9:j + 7 + length])
            (cs,) = struct.unpack_from(">H", buf, j + 7 + length)
            if cs != checksum(pid, length, payload):
                self.stats.bad_checksum += 1
                i = j + 1
                continue
            out.append(R30xPacket(address, pid, payload))
            self.stats.packets += 1
            i = j + total
        del buf[:i]
        return out
