"""A simulated R30x/AS608 fingerprint sensor on a pseudo-terminal, answering EF01 packets.

A finger is a name ("S001-right-index"). `place_finger(name)` puts it on the glass,
`lift_finger()` takes it away; `templates` maps library pages to enrolled fingers. A finger
whose name starts with "smudge" gives a messy image. `silent = True` makes the module swallow
every packet (a sensor that never answers); `unplug()`/`plug()` pull and reconnect its cable.

Besides the box's own commands it answers what a standard client (pyfingerprint) uses, as the
R30x manual describes them: Match, LoadChar, UpChar (ack, then the 512-byte character file in
DATA…END packets of the configured packet size), DownChar (ack, then it takes the host's
DATA…END packets into the buffer), GetRandomCode, SetSysPara (baud, security level, packet
size; ReadSysPara reports them), ReadIndexTable. A character file is 512 bytes derived from the
finger (the same finger always gives the same file); one downloaded from the host is kept as
sent, so it comes back byte for byte and matches whatever finger it was taken from.
"""

from __future__ import annotations

import hashlib
import logging
import random
import struct
from pathlib import Path

from drivers.protocols import r30x
from drivers.protocols.r30x import Confirm, Instr
from drivers.sim.pty_port import PtyPort, PtySimulator

log = logging.getLogger(__name__)


class R30xSim(PtySimulator):
    def __init__(self, link: str | Path, *, address: int = r30x.DEFAULT_ADDRESS,
                 password: int = 0, capacity: int = 300,
                 templates: dict[int, str] | None = None) -> None:
        self.address = address
        self.password = password
        self.capacity = capacity
        self.templates: dict[int, str] = dict(templates or {})
        self.finger: str | None = None
        self.image: str | None = None
        self.buffers: dict[int, str | None] = {1: None, 2: None}
        self.silent = False
        self.decoder = r30x.R30xDecoder()
        self.commands: list[int] = []  # instructions received, for tests
        self.security = 3
        self.baud_n = 6  # 57600 = 6 × 9600
        self.packet_code = 2  # 128-byte data packets
        self.raw_files: dict[str, bytes] = {}  # character files the host downloaded, by id
        self._receiving: tuple[int, bytearray] | None = None  # DownChar: buffer, bytes so far
        self.rng = random.Random()
        self.port = PtyPort(Path(link).parent, Path(link).name, self._on_bytes)


    def plug(self) -> None:
        self.decoder = r30x.R30xDecoder()
        self.port.plug()


    def place_finger(self, finger: str) -> None:
        self.finger = finger

    def lift_finger(self) -> None:
        self.finger = None

    @property
    def packet_size(self) -> int:
        return r30x.PACKET_SIZES[self.packet_code]

    def char_file(self, finger: str) -> bytes:
        """The 512-byte character file of a finger (or the file a host downloaded as-is)."""
        if finger in self.raw_files:
            return self.raw_files[finger]
        out = b""
        seed = finger.encode()
        while len(out) < r30x.CHAR_FILE:
            seed = hashlib.sha256(seed).digest()
            out += seed
        return out[:r30x.CHAR_FILE]

    def _finger_of(self, data: bytes) -> str:
        """Which finger a downloaded character file is: a known one, else a new identity."""
        known = {*self.templates.values(), *(b for b in self.buffers.values() if b)}
        for f in known:
            if self.char_file(f) == data:
                return f
        fid = "file-" + hashlib.sha256(data).hexdigest()[:16]
        self.raw_files[fid] = data
        return fid

    def _on_bytes(self, data: bytes) -> None:
        for p in self.decoder.feed(data):
            if self.silent or p.address != self.address:
                continue  # a module ignores packets for another address
            if p.pid in (r30x.Pid.DATA, r30x.Pid.END):
                self._on_data(p)
                continue
            if p.pid != r30x.Pid.COMMAND:
                continue
            self._receiving = None  # a command ends any unfinished DownChar
            self.commands.append(p.code)
            code, results = self._execute(p.code, p.params)
            self.port.write(r30x.ack(code, results, self.address))
            if p.code == Instr.UP_CHAR and code == Confirm.OK:
                finger = self.buffers[p.params[0]]
                assert finger is not None
                self.port.write(r30x.data_packets(self.char_file(finger), self.packet_size,
                                                  self.address))

    def _on_data(self, p: r30x.R30xPacket) -> None:
        if self._receiving is None:
            return  # data nobody asked for: the module drops it
        buf, got = self._receiving
        got += p.payload
        if p.pid == r30x.Pid.END:
            self._receiving = None
            self.buffers[buf] = self._finger_of(bytes(got[:r30x.CHAR_FILE]))

    def _execute(self, instr: int, a: bytes) -> tuple[int, bytes]:
        if instr == Instr.VFY_PWD:
            if len(a) != 4:
                return Confirm.PACKET_ERROR, b""
            ok = struct.unpack(">I", a)[0] == self.password
            return (Confirm.OK if ok else Confirm.WRONG_PASSWORD), b""
        if instr == Instr.READ_SYS_PARA:
            return Confirm.OK, struct.pack(">HHHHIHH", 0, 0x0009, self.capacity, self.security,
                                           self.address, self.packet_code, self.baud_n)
        if instr == Instr.TEMPLATE_NUM:
            return Confirm.OK, struct.pack(">H", len(self.templates))
        if instr == Instr.GEN_IMG:
            if self.finger is None:
                return Confirm.NO_FINGER, b""
            self.image = self.finger
            return Confirm.OK, b""
        if instr == Instr.IMG2TZ:
            if len(a) != 1 or a[0] not in (1, 2):
                return Confirm.PACKET_ERROR, b""
            if self.image is None:
                return Confirm.NO_IMAGE, b""
            if self.image.startswith("smudge"):
                return Confirm.IMAGE_MESSY, b""
            self.buffers[a[0]] = self.image
            return Confirm.OK, b""
        if instr == Instr.REG_MODEL:
            b1, b2 = self.buffers[1], self.buffers[2]
            if b1 is None or b1 != b2:
                return Confirm.COMBINE_FAIL, b""
            # The template goes to both buffers (the manual: "stored in CharBuffer1/2").
            return Confirm.OK, b""
        if instr == Instr.STORE:
            if len(a) != 3:
                return Confirm.PACKET_ERROR, b""
            buf, page = struct.unpack(">BH", a)
            finger = self.buffers.get(buf)
            if page >= self.capacity:
                return Confirm.BAD_LOCATION, b""
            if finger is None:
                return Confirm.NO_IMAGE, b""
            self.templates[page] = finger
            return Confirm.OK, b""
        if instr == Instr.SEARCH:
            if len(a) != 5:
                return Confirm.PACKET_ERROR, b""
            buf, start, count = struct.unpack(">BHH", a)
            finger = self.buffers.get(buf)
            for page in sorted(self.templates):
                if start <= page < start + count and self.templates[page] == finger:
                    return Confirm.OK, struct.pack(">HH", page, 180)
            return Confirm.NOT_FOUND, struct.pack(">HH", 0, 0)
        if instr == Instr.DELETE_CHAR:
            if len(a) != 4:
                return Confirm.PACKET_ERROR, b""
            page, n = struct.unpack(">HH", a)
            for p in range(page, page + n):
                self.templates.pop(p, None)
            return Confirm.OK, b""
        if instr == Instr.EMPTY:
            self.templates.clear()
            return Confirm.OK, b""
        return self._execute_more(instr, a)

    def _buffer_arg(self, a: bytes, n: int) -> int | None:
        return a[0] if len(a) == n and a[0] in (1, 2) else None

    def _execute_more(self, instr: int, a: bytes) -> tuple[int, bytes]:
        """The commands the box itself does not use but standard clients do."""
        if instr == Instr.MATCH:
            if a:
                return Confirm.PACKET_ERROR, b""
            b1, b2 = self.buffers[1], self.buffers[2]
            if b1 is not None and b1 == b2:
                return Confirm.OK, struct.pack(">H", 200)
            return Confirm.NO_MATCH, struct.pack(">H", 0)
        if instr == Instr.LOAD_CHAR:
            buf = self._buffer_arg(a, 3)
            if buf is None:
                return Confirm.PACKET_ERROR, b""
            (page,) = struct.unpack_from(">H", a, 1)
            if page >= self.capacity:
                return Confirm.BAD_LOCATION, b""
            if page not in self.templates:
                return Confirm.LOAD_ERROR, b""
            self.buffers[buf] = self.templates[page]
            return Confirm.OK, b""
        if instr == Instr.UP_CHAR:
            buf = self._buffer_arg(a, 1)
            if buf is None:
                return Confirm.PACKET_ERROR, b""
            if self.buffers[buf] is None:
                return Confirm.UPLOAD_ERROR, b""
            return Confirm.OK, b""  # the data packets follow (_on_bytes)
        if instr == Instr.DOWN_CHAR:
            buf = self._buffer_arg(a, 1)
            if buf is None:
                return Confirm.PACKET_ERROR, b""
            self._receiving = (buf, bytearray())
            return Confirm.OK, b""
        if instr == Instr.GET_RANDOM_CODE:
            return Confirm.OK, struct.pack(">I", self.rng.getrandbits(32))
        if instr == Instr.SET_SYS_PARA:
            if len(a) != 2:
                return Confirm.PACKET_ERROR, b""
            number, value = a
            if number == r30x.SYS_BAUD and 1 <= value <= 12:
                self.baud_n = value
            elif number == r30x.SYS_SECURITY and 1 <= value <= 5:
                self.security = value
            elif number == r30x.SYS_PACKET_SIZE and 0 <= value <= 3:
                self.packet_code = value
            elif number in (r30x.SYS_BAUD, r30x.SYS_SECURITY, r30x.SYS_PACKET_SIZE):
                return Confirm.PACKET_ERROR, b""
            else:
                return Confirm.BAD_REGISTER, b""
            return Confirm.OK, b""
        if instr == Instr.READ_INDEX_TABLE:
            if len(a) != 1 or a[0] > 3:
                return Confirm.PACKET_ERROR, b""
            return Confirm.OK, r30x.index_table(a[0], set(self.templates))
        return Confirm.PACKET_ERROR, b""
