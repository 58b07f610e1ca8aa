"""The simple "@" LED board protocol many cheap window boards (窗口屏) speak on RS-485.

Frame::

    @ A A A <GBK text> CR

- ``@`` (0x40) starts a frame; ``AAA`` is the board address as three ASCII decimal digits
  (001..254); the text is GBK, at most MAX_TEXT bytes; CR (0x0D) ends it.
- CR and LF never occur inside GBK multi-byte characters (trail bytes are >= 0x40), so CR is
  an unambiguous end. ``@`` can be a GBK trail byte, so the decoder walks the text by GBK
  characters and a new frame can only start after a CR or between frames.
- No reply, no checksum: a board that misses a frame shows the old text until the next one,
  which is why the driver resends every board's text after a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AT = 0x40
CR = 0x0D
LF = 0x0A
MAX_TEXT = 240


@dataclass(frozen=True)
class AtFrame:
    address: int
    text: str


def encode(address: int, text: str) -> bytes:
    if not 1 <= address <= 254:
        raise ValueError("address is 1..254")
    clean = "".join(" " if ord(c) < 0x20 else c for c in text)
    raw = clean.encode("gbk", errors="replace")  # a sign shows "?", it never refuses a call
    if len(raw) > MAX_TEXT:
        raise ValueError(f"board text is {len(raw)} bytes; at most {MAX_TEXT}")
    return b"@" + f"{address:03d}".encode() + raw + bytes([CR])


@dataclass
class DecoderStats:
    frames: int = 0
    garbage_bytes: int = 0
    bad_address: int = 0
    bad_text: int = 0
    oversized: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_address + self.bad_text + self.oversized


@dataclass
class AtDecoder:
    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)
    _in_frame: bool = False

    def feed(self, chunk: bytes) -> list[AtFrame]:
        out: list[AtFrame] = []
        for b in chunk:
            if not self._in_frame:
                if b == AT:
                    self._in_frame = True
                    self._buf.clear()
                elif b not in (CR, LF):
                    self.stats.garbage_bytes += 1
                continue
            if b == CR:
                self._in_frame = False
                f = self._frame(bytes(self._buf))
                self._buf.clear()
                if f is not None:
                    out.append(f)
                continue
            if len(self._buf) >= 3 + MAX_TEXT:
                self.stats.oversized += 1
                self._in_frame = False
                self._buf.clear()
                continue
            self._buf.append(b)
        return out

    def _frame(self, body: bytes) -> AtFrame | None:
        addr = body[:3]
        if len(addr) < 3 or not addr.isdigit() or not 1 <= int(addr) <= 254:
            self.stats.bad_address += 1
            return None
        try:
            text = body[3:].decode("gbk")
        except UnicodeDecodeError:
            self.stats.bad_text += 1
            return None
        if any(ord(c) < 0x20 for c in text):
            self.stats.bad_text += 1
            return None
        self.stats.frames += 1
        return AtFrame(int(addr), text)
