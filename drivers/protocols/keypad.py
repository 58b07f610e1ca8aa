"""RS-485 frames of caller keypads (呼叫器) and 4-key evaluators (评价器), 9600 8N1.

Frame::

    FF 68 L L 68 ADDR FUNC DATA... CS 16

- ``FF`` wake-up byte, ``68`` start, ``L`` twice (the two must agree), ``68`` again.
- ``L``: number of bytes ADDR..DATA, so ``L = 2 + len(DATA)``; at most ``MAX_L``.
- ``CS``: sum of ADDR..DATA modulo 256. ``16`` ends the frame.
- ``ADDR``: the device's bus address 1..254 (0 and 255 are reserved).

FUNC codes. Device → host (``0x01..0x3F``):

==== ================ ===================================================================
0x01 KEY_CALL         呼叫: call the next ticket
0x02 KEY_RECALL       重呼: call the current ticket again
0x03 KEY_FINISH       评价/办结: finish the case (starts it first if it was only called);
                      the window's evaluator is asked for a rating
0x04 KEY_PAUSE        暂停: pause the window, or resume it when paused
0x05 KEY_TRANSFER     转移: DATA = ASCII service code of the target service
0x06 KEY_NO_SHOW      过号: the called applicant did not come
0x07 KEY_START        开始办理: the applicant arrived, service starts
0x08 KEY_LOGIN        登录: DATA = ASCII ``staff_id:PIN``
0x09 KEY_LOGOUT       退出
0x20 RATING           evaluator key: DATA = 1 byte, 1 非常满意 2 满意 3 基本满意 4 不满意
==== ================ ===================================================================

Host → device (``0x80..0xBF``):

==== ================ ===================================================================
0x80 ACK              DATA = [FUNC acknowledged, STATUS]; STATUS 0 ok, 1 refused by the
                      queue (see the display), 2 device not configured, 3 bad frame data
0x81 DISPLAY          DATA = [waiting hi, waiting lo] + ASCII current number (0..8 bytes)
                      + optional ASCII status text after a 0x00 separator (e.g. "PAUSE")
0x82 RATE_PROMPT      to an evaluator: ask for a rating; DATA = ASCII ticket number
0x83 RATE_DONE        to an evaluator: rating recorded, DATA = [rating]
==== ================ ===================================================================

The host acknowledges every key and rating frame. The codec is pure: bytes in, frames out;
anything that is not a whole valid frame is dropped and counted, never raised.

Provenance, honestly: caller keypads and evaluators of Chinese queue systems speak vendor
protocols that are not published; the FUNC codes above are this box's own contract with the
keypads it drives, and no independent implementation of them exists. The framing is not ours:
it is the variable-length frame of IEC 60870-5-1 (FT 1.2: 68 L L 68, user data, arithmetic sum
mod 256, 16; as also used by M-Bus, EN 13757-2) behind a wake-up byte. The independent M-Bus
implementation pymeterbus (PyPI) checks it where it can: our 3-byte-body frames parse as its
control frames with a valid checksum, and the frames it builds decode here
(tests/test_keypad_board_interop.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

WAKE = 0xFF
START = 0x68
END = 0x16
MAX_L = 66  # ADDR + FUNC + 64 bytes of data
MAX_DATA = MAX_L - 2


class Func(IntEnum):
    KEY_CALL = 0x01
    KEY_RECALL = 0x02
    KEY_FINISH = 0x03
    KEY_PAUSE = 0x04
    KEY_TRANSFER = 0x05
    KEY_NO_SHOW = 0x06
    KEY_START = 0x07
    KEY_LOGIN = 0x08
    KEY_LOGOUT = 0x09
    RATING = 0x20
    ACK = 0x80
    DISPLAY = 0x81
    RATE_PROMPT = 0x82
    RATE_DONE = 0x83


class AckStatus(IntEnum):
    OK = 0
    REFUSED = 1
    NOT_CONFIGURED = 2
    BAD_DATA = 3


RATINGS = {1: "very_satisfied", 2: "satisfied", 3: "basically_satisfied", 4: "dissatisfied"}


@dataclass(frozen=True)
class KeypadFrame:
    address: int
    func: int
    data: bytes = b""


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def encode(frame: KeypadFrame) -> bytes:
    if not 0 <= frame.address <= 0xFF or not 0 <= frame.func <= 0xFF:
        raise ValueError("address and func are single bytes")
    if len(frame.data) > MAX_DATA:
        raise ValueError(f"frame data is {len(frame.data)} bytes; at most {MAX_DATA}")
    body = bytes([frame.address, frame.func]) + frame.data
    n = len(body)
    return bytes([WAKE, START, n, n, START]) + body + bytes([checksum(body), END])


def ack(address: int, func: int, status: AckStatus = AckStatus.OK) -> bytes:
    return encode(KeypadFrame(address, Func.ACK, bytes([func & 0xFF, int(status)])))


def display(address: int, waiting: int, number: str | None, status: str = "") -> bytes:
    text = (number or "").encode("ascii", "replace")[:8]
    data = min(max(waiting, 0), 0xFFFF).to_bytes(2, "big") + text
    if status:
        data += b"\x00" + status.encode("ascii", "replace")[:16]
    return encode(KeypadFrame(address, Func.DISPLAY, data))


def parse_display(data: bytes) -> tuple[int, str, str]:
    """DISPLAY data -> (waiting, number, status)."""
    if len(data) < 2:
        raise ValueError("display data needs 2 bytes of waiting count")
    waiting = int.from_bytes(data[:2], "big")
    rest = data[2:]
    number, _, status = rest.partition(b"\x00")
    return waiting, number.decode("ascii", "replace"), status.decode("ascii", "replace")


@dataclass
class DecoderStats:
    frames: int = 0
    garbage_bytes: int = 0  # bytes skipped while looking for a frame start
    bad_length: int = 0  # L bytes disagree, L too small or larger than MAX_L
    bad_checksum: int = 0
    bad_end: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_length + self.bad_checksum + self.bad_end


@dataclass
class KeypadDecoder:
    """Streaming decoder: feed any chunks, get whole valid frames; the buffer stays bounded."""

    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> list[KeypadFrame]:
        self._buf += chunk
        out: list[KeypadFrame] = []
        buf = self._buf
        i = 0
        n = len(buf)
        while True:
            # The wake byte is optional on the wire (some devices omit it): sync on 68 L L 68.
            j = buf.find(START, i)
            if j < 0:
                self.stats.garbage_bytes += n - i
                i = n
                break
            skipped = j - i
            if skipped and buf[j - 1] == WAKE:
                skipped -= 1
            self.stats.garbage_bytes += skipped
            if n - j < 4:
                i = j
                break
            ln, ln2, s2 = buf[j + 1], buf[j + 2], buf[j + 3]
            if ln != ln2 or s2 != START or ln < 2 or ln > MAX_L:
                if s2 == START or ln == ln2:
                    self.stats.bad_length += 1
                else:
                    self.stats.garbage_bytes += 1
                i = j + 1
                continue
            total = 4 + ln + 2
            if n - j < total:
                # A truncated frame (or noise that looks like a header) must not swallow a
                # whole valid frame already behind it: drop the candidate if one follows.
                k = self._complete_after(buf, j + 1, n)
                if k is not None:
                    self.stats.bad_length += 1
                    i = k
                    continue
                i = j
                break
            body = bytes(buf[j + 4:j + 4 + ln])
            cs, end = buf[j + 4 + ln], buf[j + 5 + ln]
            if end != END:
                self.stats.bad_end += 1
                i = j + 1
                continue
            if cs != checksum(body):
                self.stats.bad_checksum += 1
                i = j + 1
                continue
            out.append(KeypadFrame(body[0], body[1], body[2:]))
            self.stats.frames += 1
            i = j + total
        del buf[:i]
        return out

    @staticmethod
    def _complete_after(buf: bytearray, start: int, n: int) -> int | None:
        """Index of the first whole valid frame starting at or after `start`, if any."""
        j = buf.find(START, start)
        while 0 <= j and n - j >= 6:
            ln = buf[j + 1]
            if ln == buf[j + 2] and buf[j + 3] == START and 2 <= ln <= MAX_L \
                    and n - j >= 6 + ln and buf[j + 5 + ln] == END \
                    and buf[j + 4 + ln] == checksum(bytes(buf[j + 4:j + 4 + ln])):
                return j
            j = buf.find(START, j + 1)
        return None
