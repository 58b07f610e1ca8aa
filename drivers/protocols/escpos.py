"""ESC/POS for queue-ticket printers: the ticket encoder, DLE EOT status, and a stream decoder.

Chinese text is sent in GB18030 after ``FS &`` (Hanzi mode on), never through a library's
automatic code-page guessing: python-escpos sends ``???`` for strings of only full-width
punctuation, and many printers print Hanzi only in Hanzi mode.

The decoder is what a printer does with the byte stream; the simulator uses it and tests read
tickets back through it. It never raises on input: unknown commands and oversized declarations
are dropped and counted; a command split across reads waits for its remaining bytes. It knows
the length of every fixed-length ESC, GS, FS and DLE command of the Epson "ESC/POS Command
Reference for TM printers" (and the variable ones: ESC *, ESC D, GS k, GS v 0, GS 8 L, GS *,
the ( families), so a command it does not act on is skipped whole, never printed as letters. It
acts on: ESC ! (font, bold, double height/width, underline), ESC E/G, ESC - (underline),
ESC M (font), GS B (reverse), ESC { (upside down), GS ! (size), ESC a, FS & / FS ., ESC d/J
(print the line), GS V and ESC i/m (cut), GS ( k QR, GS v 0 raster, DLE EOT.

Checked against python-escpos (PyPI), an independent encoder: tickets it renders decode with no
command letters on paper, and our QR, cut and style sequences equal its bytes for the same
settings (tests/test_printer_interop.py).

Status (``DLE EOT n``, one byte back, bits 1 and 4 always set):

- n=1 printer: bit 3 offline.
- n=2 offline cause: bit 2 cover open, bit 5 printing stopped by paper end, bit 6 error.
- n=4 paper roll sensor: bits 2+3 paper near end, bits 5+6 paper end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

ESC, GS, FS, DLE, EOT, LF = 0x1B, 0x1D, 0x1C, 0x10, 0x04, 0x0A

INIT = b"\x1b@"
HANZI_ON = b"\x1c&"
HANZI_OFF = b"\x1c."
CUT = b"\x1dVB\x00"  # feed to the cutter, partial cut
QR_MAX_DATA = 7089  # the largest QR (version 40, numeric); anything longer is not a QR
RASTER_MAX_BYTES = 72 * 4096  # 576 dots wide, 4096 lines: more is no ticket
LINE_MAX = 4096
PAREN_MAX = 1024  # data of an ESC/GS/FS ( function other than graphics
BIT_IMAGE_MAX_DOTS = 2048  # ESC * columns: wider than any receipt printer's line

STATUS_BASE = 0x12


def status_request(n: int) -> bytes:
    return bytes([DLE, EOT, n])


class PaperState(StrEnum):
    OK = "ok"
    NEAR_END = "paper_near_end"
    END = "paper_end"
    COVER_OPEN = "cover_open"
    OFFLINE = "offline"


@dataclass(frozen=True)
class PrinterStatus:
    cover_open: bool = False
    paper_end: bool = False
    near_end: bool = False
    offline: bool = False
    error: bool = False

    @property
    def state(self) -> PaperState:
        if self.paper_end:
            return PaperState.END
        if self.cover_open:
            return PaperState.COVER_OPEN
        if self.near_end:
            return PaperState.NEAR_END
        if self.offline or self.error:
            return PaperState.OFFLINE
        return PaperState.OK


def _fixed_bits_ok(b: int) -> bool:
    return b & 0x93 == STATUS_BASE  # bits 0, 1, 4, 7 are fixed 0, 1, 1, 0


def parse_status(offline_byte: int, paper_byte: int) -> PrinterStatus:
    """Answers to DLE EOT 2 and DLE EOT 4; a byte with wrong fixed bits is a protocol error."""
    if not _fixed_bits_ok(offline_byte) or not _fixed_bits_ok(paper_byte):
        raise ValueError(f"not a DLE EOT status: {offline_byte:#04x} {paper_byte:#04x}")
    return PrinterStatus(
        cover_open=bool(offline_byte & 0x04),
        paper_end=bool(paper_byte & 0x60) or bool(offline_byte & 0x20),
        near_end=bool(paper_byte & 0x0C),
        error=bool(offline_byte & 0x40),
    )


def status_bytes(n: int, st: PrinterStatus) -> bytes:
    """What a printer answers to DLE EOT n (the simulator's side)."""
    b = STATUS_BASE
    if n == 1:
        b |= 0x08 if (st.offline or st.cover_open or st.paper_end) else 0
    elif n == 2:
        b |= (0x04 if st.cover_open else 0) | (0x20 if st.paper_end else 0) | \
             (0x40 if st.error else 0)
    elif n == 3:
        b |= 0x40 if st.error else 0
    elif n == 4:
        b |= (0x0C if st.near_end else 0) | (0x60 if st.paper_end else 0)
    return bytes([b])


# ---- encoding ---------------------------------------------------------------------------------
def text(s: str) -> bytes:
    """GB18030 text: every Hanzi and full-width punctuation mark encodes; nothing is `?`."""
    return s.encode("gb18030")


def align(where: Literal["left", "center", "right"]) -> bytes:
    return bytes([ESC, 0x61, {"left": 0, "center": 1, "right": 2}[where]])


def size(width: int, height: int) -> bytes:
    if not (1 <= width <= 8 and 1 <= height <= 8):
        raise ValueError("character size is 1..8")
    return bytes([GS, 0x21, ((width - 1) << 4) | (height - 1)])


def bold(on: bool) -> bytes:
    return bytes([ESC, 0x45, 1 if on else 0])


def feed(lines: int) -> bytes:
    return bytes([ESC, 0x64, max(0, min(lines, 255))])


def qr_native(payload: str, module: int = 6, ecc: Literal["L", "M", "Q", "H"] = "M") -> bytes:
    """GS ( k: model 2, module size, error correction, store, print."""
    data = payload.encode("utf-8")
    if len(data) > QR_MAX_DATA:
        raise ValueError("QR payload too long")
    store_len = len(data) + 3
    return b"".join([
        b"\x1d(k\x04\x00\x31\x41\x32\x00",  # model 2
        b"\x1d(k\x03\x00\x31\x43" + bytes([max(1, min(module, 16))]),
        b"\x1d(k\x03\x00\x31\x45" + bytes([{"L": 48, "M": 49, "Q": 50, "H": 51}[ecc]]),
        b"\x1d(k" + bytes([store_len & 0xFF, store_len >> 8]) + b"\x31\x50\x30" + data,
        b"\x1d(k\x03\x00\x31\x51\x30",  # print the stored symbol
    ])


def qr_matrix(payload: str) -> list[list[bool]]:
    import qrcode  # only needed for printers without native QR

    q = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    q.add_data(payload)
    q.make(fit=True)
    return [list(row) for row in q.get_matrix()]


def raster(bits: list[list[bool]], scale: int = 4) -> bytes:
    """GS v 0: a 1-bit image, rows of bytes, MSB is the leftmost dot."""
    h = len(bits) * scale
    w = (len(bits[0]) if bits else 0) * scale
    wb = (w + 7) // 8
    out = bytearray()
    for row in bits:
        line = bytearray(wb)
        for x, dot in enumerate(row):
            if dot:
                for s in range(scale):
                    px = x * scale + s
                    line[px // 8] |= 0x80 >> (px % 8)
        out += bytes(line) * scale
    return bytes([GS, 0x76, 0x30, 0, wb & 0xFF, wb >> 8, h & 0xFF, h >> 8]) + bytes(out)


@dataclass(frozen=True)
class TicketContent:
    hall: str
    service: str
    number: str
    ahead: int
    est_wait_min: int
    time: str  # "2026-11-23 09:04"
    qr_payload: str | None
    footer: str
    priority_note: str | None = None  # "绿色通道" ...


def ticket_bytes(t: TicketContent, *, qr: Literal["native", "image", "none"] = "native",
                 width_chars: int = 32) -> bytes:
    rule = b"-" * width_chars
    parts = [
        INIT, HANZI_ON, align("center"),
        bold(True), text(t.hall), bytes([LF]), bold(False),
        text(t.service), bytes([LF]), rule, bytes([LF]),
        size(3, 3), text(t.number), bytes([LF]), size(1, 1),
    ]
    if t.priority_note:
        parts += [text(f"【{t.priority_note}】"), bytes([LF])]
    parts += [
        text(f"您前面还有 {t.ahead} 人"), bytes([LF]),
        text(f"预计等候约 {t.est_wait_min} 分钟"), bytes([LF]),
        text(t.time), bytes([LF]),
    ]
    if t.qr_payload and qr == "native":
        parts += [qr_native(t.qr_payload), bytes([LF])]
    elif t.qr_payload and qr == "image":
        parts += [raster(qr_matrix(t.qr_payload)), bytes([LF])]
    parts += [rule, bytes([LF]), text(t.footer), bytes([LF]), feed(3), HANZI_OFF, CUT]
    return b"".join(parts)


# ---- decoding (what the printer does) ---------------------------------------------------------
@dataclass(frozen=True)
class Line:
    text: str
    align: int
    width: int
    height: int
    bold: bool
    underline: int = 0  # 0 off, 1 or 2 dots thick
    font: int = 0  # 0 font A, 1 font B, 2 font C
    reverse: bool = False  # white on black (GS B)
    upside_down: bool = False


@dataclass(frozen=True)
class QrCode:
    payload: str
    module: int


@dataclass(frozen=True)
class Image:
    width: int  # dots
    height: int
    data: bytes

    def dot(self, x: int, y: int) -> bool:
        wb = (self.width + 7) // 8
        return bool(self.data[y * wb + x // 8] & (0x80 >> (x % 8)))


@dataclass(frozen=True)
class Cut:
    pass


@dataclass(frozen=True)
class StatusQuery:
    n: int


Element = Line | QrCode | Image | Cut | StatusQuery


@dataclass
class DecoderStats:
    commands: int = 0
    unknown: int = 0  # unknown or malformed commands dropped
    oversized: int = 0  # declared lengths beyond any ticket, lines beyond LINE_MAX
    bad_text: int = 0  # lines that did not decode (e.g. Hanzi without FS &)


@dataclass
class EscPosDecoder:
    stats: DecoderStats = field(default_factory=DecoderStats)
    hanzi: bool = False
    _buf: bytearray = field(default_factory=bytearray)
    _line: bytearray = field(default_factory=bytearray)
    _align: int = 0
    _w: int = 1
    _h: int = 1
    _bold: bool = False
    _underline: int = 0
    _font: int = 0
    _reverse: bool = False
    _upside_down: bool = False
    _qr_data: bytes | None = None
    _qr_module: int = 3

    def feed(self, chunk: bytes) -> list[Element]:
        self._buf += chunk
        out: list[Element] = []
        buf = self._buf
        i, n = 0, len(buf)
        while i < n:
            b = buf[i]
            if b == LF:
                out.append(self._take_line())
                i += 1
                continue
            if b == 0x0D:
                i += 1
                continue
            if b not in (ESC, GS, FS, DLE):
                if b < 0x20:
                    self.stats.unknown += 1
                else:
                    self._line.append(b)
                    if len(self._line) > LINE_MAX:
                        self.stats.oversized += 1
                        out.append(self._take_line())
                i += 1
                continue
            used = self._command(buf, i, n, out)
            if used == 0:  # incomplete: wait for more bytes
                break
            self.stats.commands += 1
            i += used
        del buf[:i]
        return out

    def _take_line(self) -> Line:
        raw = bytes(self._line)
        self._line.clear()
        try:
            s = raw.decode("gb18030") if self.hanzi else raw.decode("ascii")
        except UnicodeDecodeError:
            # Without Hanzi mode a real printer prints code-page symbols: garbage on paper.
            self.stats.bad_text += 1
            s = raw.decode("latin-1")
        return Line(s, self._align, self._w, self._h, self._bold, self._underline, self._font,
                    self._reverse, self._upside_down)

    def _command(self, buf: bytearray, i: int, n: int, out: list[Element]) -> int:
        """Bytes consumed by the command at i; 0 when it is not complete yet."""
        if n - i < 2:
            return 0
        b, c = buf[i], buf[i + 1]
        if b == DLE:
            if c == EOT:
                if n - i < 3:
                    return 0
                if 1 <= buf[i + 2] <= 4:
                    out.append(StatusQuery(buf[i + 2]))
                else:
                    self.stats.unknown += 1
                return 3
            args = DLE_ARGS.get(c)
        elif b == FS:
            if c == 0x26:
                self.hanzi = True
                return 2
            if c == 0x2E:
                self.hanzi = False
                return 2
            if c == 0x28:
                return self._paren(buf, i, n)
            args = FS_ARGS.get(c)
        elif b == ESC:
            if c == 0x40:
                self._reset()
                return 2
            if c == 0x2A:  # ESC * m nL nH: bit image columns
                if n - i < 5:
                    return 0
                m, k = buf[i + 2], buf[i + 3] | buf[i + 4] << 8
                if m not in (0, 1, 32, 33):
                    self.stats.unknown += 1
                    return 1
                if k > BIT_IMAGE_MAX_DOTS:
                    self.stats.oversized += 1
                    return 5
                return self._skip(i, n, 5 + k * (1 if m < 2 else 3))
            if c == 0x44:  # ESC D n1..nk NUL: tab positions
                end = buf.find(0, i + 2, i + 35)
                if end < 0:
                    return 0 if n - i < 35 else 2
                return end - i + 1
            if c == 0x28:  # ESC ( x pL pH …
                return self._paren(buf, i, n)
            if c in (0x69, 0x6D):  # ESC i / ESC m: (partial) cut
                self._cut(out)
                return 2
            args = ESC_ARGS.get(c)
            if args is not None and n - i < 2 + args:
                return 0
            if args == 1:
                self._esc1(c, buf[i + 2], out)
        else:  # GS
            if c == 0x56:
                return self._gs_cut(buf, i, n, out)
            if c == 0x28:
                if n - i < 3:
                    return 0
                return self._gs_paren(buf, i, n, out) if buf[i + 2] == 0x6B \
                    else self._paren(buf, i, n)
            if c == 0x76:
                return self._raster(buf, i, n, out)
            if c == 0x6B:
                return self._barcode(buf, i, n)
            if c == 0x38:  # GS 8 L p1..p4 …: graphics with a 32-bit length
                if n - i < 7:
                    return 0
                ln = int.from_bytes(buf[i + 3:i + 7], "little")
                if buf[i + 2] != 0x4C or ln > RASTER_MAX_BYTES:
                    self.stats.oversized += 1
                    return 7 if buf[i + 2] == 0x4C else 1
                return self._skip(i, n, 7 + ln)
            if c == 0x2A:  # GS * x y d…: define a downloaded bit image
                if n - i < 4:
                    return 0
                ln = buf[i + 2] * buf[i + 3] * 8
                if buf[i + 2] * buf[i + 3] > 1536:  # the reference's limit: x × y ≤ 1536
                    self.stats.oversized += 1
                    return 4
                return self._skip(i, n, 4 + ln)
            args = GS_ARGS.get(c)
            if args is not None and n - i < 2 + args:
                return 0
            if args == 1:
                self._gs1(c, buf[i + 2])
        if args is None:
            return self._unknown()
        return 2 + args if n - i >= 2 + args else 0

    def _unknown(self) -> int:
        self.stats.unknown += 1
        return 1  # drop only the prefix: the next byte may start a valid command

    @staticmethod
    def _skip(i: int, n: int, length: int) -> int:
        return length if n - i >= length else 0

    def _esc1(self, c: int, v: int, out: list[Element]) -> None:
        """The one-argument ESC commands that change what is printed."""
        if c == 0x61:
            self._align = v % 3 if v < 3 or 48 <= v <= 50 else 0
        elif c in (0x45, 0x47):  # emphasized / double-strike: both print bold
            self._bold = bool(v & 1)
        elif c == 0x21:  # print mode: font, emphasized, double height/width, underline
            self._font = v & 1
            self._bold = bool(v & 0x08)
            self._h = 2 if v & 0x10 else 1
            self._w = 2 if v & 0x20 else 1
            self._underline = 1 if v & 0x80 else 0
        elif c == 0x2D:
            self._underline = v % 48 if v in (0, 1, 2, 48, 49, 50) else 0
        elif c == 0x4D:
            self._font = v % 48 if v in (0, 1, 2, 48, 49, 50) else 0
        elif c == 0x7B:
            self._upside_down = bool(v & 1)
        elif c in (0x64, 0x4A) and self._line:
            out.append(self._take_line())  # print and feed

    def _gs1(self, c: int, v: int) -> None:
        if c == 0x21:
            self._w, self._h = (v >> 4) + 1, (v & 0x0F) + 1
            if self._w > 8 or self._h > 8:
                self.stats.unknown += 1
                self._w, self._h = 1, 1
        elif c == 0x42:
            self._reverse = bool(v & 1)

    def _gs_cut(self, buf: bytearray, i: int, n: int, out: list[Element]) -> int:
        if n - i < 3:
            return 0
        m = buf[i + 2]
        if m in (65, 66, 97, 98, 103, 104):  # cut after feeding n
            if n - i < 4:
                return 0
            self._cut(out)
            return 4
        if m in (0, 1, 48, 49):
            self._cut(out)
            return 3
        return self._unknown()

    def _paren(self, buf: bytearray, i: int, n: int) -> int:
        """ESC/GS/FS ( x pL pH and pL+256·pH bytes we do not act on: skipped whole.

        Only GS ( L (graphics) carries large data; a larger declaration elsewhere is noise,
        and trusting it would swallow the tickets behind it."""
        if n - i < 5:
            return 0
        ln = buf[i + 3] | buf[i + 4] << 8
        big = buf[i] == GS and buf[i + 2] == 0x4C
        if ln > (RASTER_MAX_BYTES if big else PAREN_MAX):
            self.stats.oversized += 1
            return 5
        return self._skip(i, n, 5 + ln)

    def _barcode(self, buf: bytearray, i: int, n: int) -> int:
        """GS k m …: m 0..6 NUL-terminated data; m 65..79 a length byte, then the data."""
        if n - i < 4:
            return 0
        m = buf[i + 2]
        if m <= 6:
            end = buf.find(0, i + 3, i + 3 + 256)
            if end < 0:
                if n - i >= 3 + 256:
                    self.stats.oversized += 1
                    return 3
                return 0
            return end - i + 1
        if 65 <= m <= 79:
            return self._skip(i, n, 4 + buf[i + 3])
        return self._unknown()

    def _gs_paren(self, buf: bytearray, i: int, n: int, out: list[Element]) -> int:
        if n - i < 5:
            return 0
        ln = buf[i + 3] | (buf[i + 4] << 8)
        if ln < 2 or ln > QR_MAX_DATA + 3:
            self.stats.oversized += 1
            return 5  # drop the header; its declared payload is not trusted
        if n - i < 5 + ln:
            return 0
        body = bytes(buf[i + 5:i + 5 + ln])
        cn, fn = body[0], body[1]
        if cn != 0x31:
            self.stats.unknown += 1
        elif fn == 0x43 and ln == 3:
            self._qr_module = body[2]
        elif fn == 0x50 and ln >= 3:
            self._qr_data = body[3:]
        elif fn == 0x51:
            if self._qr_data is None:
                self.stats.unknown += 1
            else:
                try:
                    out.append(QrCode(self._qr_data.decode("utf-8"), self._qr_module))
                except UnicodeDecodeError:
                    self.stats.bad_text += 1
        elif fn not in (0x41, 0x45):
            self.stats.unknown += 1
        return 5 + ln

    def _raster(self, buf: bytearray, i: int, n: int, out: list[Element]) -> int:
        if n - i < 8:
            return 0
        if buf[i + 2] not in (0, 48):
            self.stats.unknown += 1
            return 1
        wb = buf[i + 4] | (buf[i + 5] << 8)
        h = buf[i + 6] | (buf[i + 7] << 8)
        total = wb * h
        if total == 0 or total > RASTER_MAX_BYTES or wb > 72:
            self.stats.oversized += 1
            return 8
        if n - i < 8 + total:
            return 0
        out.append(Image(wb * 8, h, bytes(buf[i + 8:i + 8 + total])))
        return 8 + total

    def _cut(self, out: list[Element]) -> None:
        if self._line:
            out.append(self._take_line())
        out.append(Cut())

    def _reset(self) -> None:
        self._align, self._w, self._h, self._bold = 0, 1, 1, False
        self._underline, self._font, self._reverse, self._upside_down = 0, 0, False, False
        self.hanzi = False
        self._qr_data = None
        self._qr_module = 3


# Argument bytes of the fixed-length commands (Epson ESC/POS Command Reference for TM printers).
ESC_ARGS: dict[int, int] = {
    0x0C: 0, 0x20: 1, 0x21: 1, 0x24: 2, 0x25: 1, 0x2D: 1, 0x32: 0, 0x33: 1, 0x3C: 0,
    0x3D: 1, 0x3F: 1, 0x45: 1, 0x47: 1, 0x4A: 1, 0x4C: 0, 0x4D: 1, 0x52: 1,
    0x53: 0, 0x54: 1, 0x55: 1, 0x56: 1, 0x57: 8, 0x5C: 2, 0x61: 1, 0x63: 2, 0x64: 1,
    0x65: 1, 0x70: 3, 0x72: 1, 0x74: 1, 0x75: 1, 0x76: 0, 0x7B: 1,
}
GS_ARGS: dict[int, int] = {
    0x21: 1, 0x24: 2, 0x2F: 1, 0x3A: 0, 0x42: 1, 0x45: 1, 0x48: 1, 0x49: 1, 0x4C: 2,
    0x50: 2, 0x54: 1, 0x57: 2, 0x5C: 2, 0x5E: 3, 0x61: 1, 0x62: 1, 0x63: 0, 0x66: 1,
    0x67: 4, 0x68: 1, 0x72: 1, 0x77: 1, 0x7A: 3,
}
FS_ARGS: dict[int, int] = {0x21: 1, 0x2D: 1, 0x43: 1, 0x53: 2, 0x57: 1, 0x70: 2}
DLE_ARGS: dict[int, int] = {0x05: 1, 0x14: 3}


def render_text(elements: list[Element], width_chars: int = 32) -> str:
    """A printed ticket as plain text, the way it looks on paper (roughly)."""
    rows: list[str] = []
    for e in elements:
        if isinstance(e, Line):
            t = e.text if e.width == 1 else " ".join(e.text)
            if e.align == 1:
                t = t.center(width_chars)
            elif e.align == 2:
                t = t.rjust(width_chars)
            rows.append(t.rstrip())
        elif isinstance(e, QrCode):
            rows.append(f"[QR {e.payload}]".center(width_chars).rstrip())
        elif isinstance(e, Image):
            rows.append(f"[image {e.width}x{e.height}]".center(width_chars).rstrip())
        elif isinstance(e, Cut):
            rows.append("✂" + "-" * (width_chars - 1))
    return "\n".join(rows)
