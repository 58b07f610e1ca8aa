"""A simulated RS-485 line of LED boards on a pseudo-terminal: BX-5 and "@" boards mixed.

Each board at its address shows the last text addressed to it; BX-5 controllers answer a
command that asks for a response, "@" boards never answer. The line demultiplexes the byte
stream the way the boards do: A5 opens a BX-5 frame up to 5A, "@" opens a text frame up to CR.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from drivers.protocols import bx5
from drivers.protocols.at_board import AtDecoder
from drivers.sim.pty_port import PtyPort, PtySimulator

log = logging.getLogger(__name__)


class BoardBusSim(PtySimulator):
    device_class = "board"

    def __init__(self, dev_dir: Path, bus_id: str, boards: dict[int, str]) -> None:
        self.bus_id = bus_id
        self.name = f"sim-{bus_id}"
        self.boards = dict(boards)  # address -> "bx5" | "at"
        self.shown: dict[int, str] = {}
        self.frames: dict[int, int] = {}
        self.last_rx_at: dict[int, float] = {}  # loop time a board's last frame completed
        self.dead: set[int] = set()  # boards that are broken: they neither show nor answer
        self.wrong_protocol = 0  # frames for an address whose board speaks the other protocol
        self.unknown_address = 0
        self.bx5 = bx5.Bx5Decoder()
        self.at = AtDecoder()
        self._mode: str | None = None
        self._changed = asyncio.Event()
        self.port = PtyPort(dev_dir, bus_id, self._on_bytes)


    def _on_bytes(self, data: bytes) -> None:
        # Split into protocol segments; each decoder sees only its own frames. Searched with
        # bytes.find, not byte by byte: the simulators share the loop with the box in the
        # benches, and a Python loop per byte of 250 boards' frames was a good part of it.
        pos, n = 0, len(data)
        while pos < n:
            if self._mode is None:
                heads = [i for i in (data.find(bx5.HEAD, pos), data.find(0x40, pos)) if i >= 0]
                if not heads:
                    self.bx5.stats.garbage_bytes += n - pos
                    return
                start = min(heads)
                self.bx5.stats.garbage_bytes += start - pos
                self._mode = "bx5" if data[start] == bx5.HEAD else "at"
                pos = start
            end = data.find(bx5.TAIL if self._mode == "bx5" else 0x0D,
                            pos + 1 if data[pos] in (bx5.HEAD, 0x40) else pos)
            seg = data[pos:] if end < 0 else data[pos:end + 1]
            if self._mode == "bx5":
                self._on_bx5(seg)
            else:
                self._on_at(seg)
            if end < 0:
                return
            self._mode = None
            pos = end + 1

    def _on_bx5(self, seg: bytes) -> None:
        for p in self.bx5.feed(seg):
            try:
                t = bx5.parse_text(p)
            except (ValueError, UnicodeDecodeError):
                continue
            if self._show(p.dst, "bx5", t.text) and t.want_reply:
                self.port.write(bx5.encode_ack(p.dst, *bx5.CMD_DYNAMIC))

    def _on_at(self, seg: bytes) -> None:
        for f in self.at.feed(seg):
            self._show(f.address, "at", f.text)

    def _show(self, address: int, protocol: str, text: str) -> bool:
        kind = self.boards.get(address)
        if address in self.dead:
            return False
        if kind is None:
            self.unknown_address += 1
            return False
        if kind != protocol:
            self.wrong_protocol += 1
            return False
        if self.shown.get(address) != text:
            log.info("%s board %d (%s): %s", self.bus_id, address, protocol, text)
        self.shown[address] = text
        self.frames[address] = self.frames.get(address, 0) + 1
        self.last_rx_at[address] = asyncio.get_running_loop().time()
        self._changed.set()
        return True

    async def wait_shown(self, address: int, text: str, timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while self.shown.get(address) != text:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(_wait(), timeout)
