"""A simulated R30x/AS608 fingerprint sensor on a pseudo-terminal, answering EF01 packets.

A finger is a name ("S001-right-index"). `place_finger(name)` puts it on the glass,
`lift_finger()` takes it away; `templates` maps library pages to enrolled fingers. A finger
whose name starts with "smudge" gives a messy image. `silent = True` makes the module swallow
every packet (a sensor that never answers); `unplug()`/`plug()` pull and reconnect its cable.
"""

from __future__ import annotations

import logging
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
        self.port = PtyPort(Path(link).parent, Path(link).name, self._on_bytes)


    def plug(self) -> None:
        self.decoder = r30x.R30xDecoder()
        self.port.plug()


    def place_finger(self, finger: str) -> None:
        self.finger = finger

    def lift_finger(self) -> None:
        self.finger = None

    def _on_bytes(self, data: bytes) -> None:
        for p in self.decoder.feed(data):
            if self.silent or p.pid != r30x.Pid.COMMAND or p.address != self.address:
                continue  # a module ignores packets for another address
            self.commands.append(p.code)
            code, results = self._execute(p.code, p.params)
            self.port.write(r30x.ack(code, results, self.address))

    def _execute(self, instr: int, a: bytes) -> tuple[int, bytes]:
        if instr == Instr.VFY_PWD:
            if len(a) != 4:
                return Confirm.PACKET_ERROR, b""
            ok = struct.unpack(">I", a)[0] == self.password
            return (Confirm.OK if ok else Confirm.WRONG_PASSWORD), b""
        if instr == Instr.READ_SYS_PARA:
            return Confirm.OK, struct.pack(">HHHHIHH", 0, 0x0009, self.capacity, 3,
                                           self.address, 2, 6)
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
        return Confirm.PACKET_ERROR, b""
