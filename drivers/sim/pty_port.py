"""A simulated serial device's end of the wire: the master side of a pseudo-terminal.

The driver opens the slave through a stable symlink (``{dev_dir}/{device_id}``), as it would
open ``/dev/serial/by-id/...``. `unplug()` closes the master: the driver's next read gets EIO,
exactly as when a USB adapter is pulled. `plug()` opens a NEW pty (a new /dev/pts/N) and moves
the symlink atomically, so the driver must resolve the path again to find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pty
import tty
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class PtyPort:
    def __init__(self, dev_dir: Path, device_id: str, on_bytes: Callable[[bytes], None]) -> None:
        self.link_path = Path(dev_dir) / device_id
        self.device_id = device_id
        self.on_bytes = on_bytes
        self.master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.plugs = 0
        self.bytes_in = 0
        self.last_rx: float | None = None  # loop time of the last byte received from the host

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def plug(self) -> str:
        self._loop = asyncio.get_running_loop()
        if self.master is not None:
            return str(self.link_path)
        master, slave = pty.openpty()
        # Raw from the start: no echo, no CR/LF translation, before the driver opens it.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        self.link_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link_path.with_name(f".{self.device_id}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.link_path)
        self._loop.add_reader(master, self._readable)
        self.plugs += 1
        return str(self.link_path)

    def unplug(self) -> None:
        """Pull the cable: the node disappears and the driver's fd goes dead (EIO)."""
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()
        if self.master is not None:
            if self._loop:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self.master)
            os.close(self.master)
        if self._slave is not None:
            # Our own slave fd kept reads on the master from failing while no driver was open.
            os.close(self._slave)
        self.master = self._slave = None

    def _readable(self) -> None:
        if self.master is None:
            return
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:
            return
        if data:
            self.bytes_in += len(data)
            if self._loop:
                self.last_rx = self._loop.time()
            self.on_bytes(data)

    def write(self, data: bytes) -> None:
        """Device → host bytes. Dropped when unplugged (nobody is listening)."""
        if self.master is None:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                log.warning("%s: host is not reading; %d bytes dropped", self.device_id,
                            len(view))
                return
            view = view[n:]


class PtySimulator:
    """What every serial-device simulator does with its port: the endpoint is the stable
    symlink, start plugs the cable in, stop and unplug pull it. Subclasses set `self.port`."""

    port: PtyPort

    @property
    def endpoint(self) -> str:
        return str(self.port.link_path)

    async def start(self) -> None:
        self.plug()

    async def stop(self) -> None:
        self.port.unplug()

    def plug(self) -> None:
        self.port.plug()

    def unplug(self) -> None:
        self.port.unplug()
