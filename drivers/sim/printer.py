"""A simulated ESC/POS ticket printer on a pseudo-terminal (serial/USB-serial) or TCP 9100.

It runs the printer side of the protocol: decodes what the host sends (FS &, GB18030, GS ( k QR,
raster images, cut), answers DLE EOT with real status bytes, and keeps every printed ticket,
renderable as text. Controls: `near_end`, `paper_end`, `cover_open`. With paper end or the
cover open, it prints nothing (as a real printer) and counts the discarded tickets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

from drivers.base import Endpoint
from drivers.protocols.escpos import (
    Cut,
    Element,
    EscPosDecoder,
    PrinterStatus,
    QrCode,
    StatusQuery,
    render_text,
    status_bytes,
)
from drivers.sim.pty_port import PtyPort

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrinterSim:
    device_class = "printer"

    def __init__(self, dev_dir: Path, device_id: str, *, tcp: bool = False) -> None:
        self.device_id = device_id
        self.name = f"sim-{device_id}"
        self.tcp = tcp
        self.decoder = EscPosDecoder()
        self.near_end = False
        self.paper_end = False
        self.cover_open = False
        self.tickets: list[list[Element]] = []
        self.discarded = 0
        self.status_queries = 0
        self.last_cut_at: float | None = None  # loop time the last ticket's final byte came in
        self._current: list[Element] = []
        self._printing_blocked = False
        self._ticket_event = asyncio.Event()
        self.port = PtyPort(dev_dir, device_id, self._on_bytes)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.tcp_port: int | None = _free_port() if tcp else None
        self.paper_file: Path | None = Path(dev_dir).parent / "sim" / f"{device_id}.txt"

    # ---- component / control --------------------------------------------------------------
    async def start(self) -> None:
        await self.plug()

    async def stop(self) -> None:
        await self.unplug()

    @property
    def endpoint(self) -> str:
        if self.tcp:
            return f"tcp://127.0.0.1:{self.tcp_port}"
        return str(self.port.link_path)

    @property
    def link_endpoint(self) -> Endpoint:
        """What the driver's Link opens (the USB simulator adds its pyusb backend)."""
        return Endpoint.parse(self.endpoint)

    async def plug(self) -> None:
        if not self.tcp:
            self.port.plug()
            return
        if self._server is None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1",
                                                      self.tcp_port or 0)
            self.tcp_port = self._server.sockets[0].getsockname()[1]

    async def unplug(self) -> None:
        if not self.tcp:
            self.port.unplug()
            return
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def status(self) -> PrinterStatus:
        return PrinterStatus(cover_open=self.cover_open, paper_end=self.paper_end,
                             near_end=self.near_end)

    # ---- wire ---------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                self._on_bytes(data, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _reply(self, data: bytes, writer: asyncio.StreamWriter | None) -> None:
        if writer is not None:
            writer.write(data)
        else:
            self.port.write(data)

    def _on_bytes(self, data: bytes, writer: asyncio.StreamWriter | None = None) -> None:
        for el in self.decoder.feed(data):
            if isinstance(el, StatusQuery):
                self.status_queries += 1
                self._reply(status_bytes(el.n, self.status()), writer)
                continue
            if not self._current:
                # A ticket starts: a real printer stops at paper end / open cover.
                self._printing_blocked = self.paper_end or self.cover_open
            self._current.append(el)
            if isinstance(el, Cut):
                if self._printing_blocked:
                    self.discarded += 1
                else:
                    self.tickets.append(self._current)
                    self.last_cut_at = asyncio.get_running_loop().time()
                    self._ticket_event.set()
                    self._show(render_text(self._current))
                self._current = []

    def _show(self, text: str) -> None:
        """The demo's paper: each ticket in the log and appended to {data}/sim/<id>.txt."""
        log.info("%s printed:\n%s", self.device_id, text)
        if self.paper_file is not None:
            with contextlib.suppress(OSError):
                self.paper_file.parent.mkdir(parents=True, exist_ok=True)
                with self.paper_file.open("a", encoding="utf-8") as f:
                    f.write(text + "\n\n")

    # ---- reading the output -----------------------------------------------------------------
    async def wait_ticket(self, count: int, timeout: float = 5.0) -> list[Element]:
        """Wait until `count` tickets have been printed; returns the last one."""
        async def _wait() -> None:
            while len(self.tickets) < count:
                self._ticket_event.clear()
                await self._ticket_event.wait()
        await asyncio.wait_for(_wait(), timeout)
        return self.tickets[count - 1]

    def text(self, index: int = -1) -> str:
        return render_text(self.tickets[index])

    def qr(self, index: int = -1) -> str | None:
        return next((e.payload for e in self.tickets[index] if isinstance(e, QrCode)), None)
