"""The device end of a simulated serial line for issue 4's simulators (R30x, 4-key evaluators).

The simulator owns a pseudo-terminal's master side; the driver opens the slave through a stable
symlink (like /dev/serial/by-id), which moves to the new node on every replug. `unplug()` closes
the master: the driver's reads fail at once (EIO), exactly as when a USB adapter is pulled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import tty
from collections.abc import Callable
from pathlib import Path


class PtyDevice:
    def __init__(self, link: str | Path, on_bytes: Callable[[bytes], None]) -> None:
        self.link = Path(link)
        self.on_bytes = on_bytes
        self.master: int | None = None
        self._slave: int | None = None
        self.node: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def plug(self) -> None:
        """Create the pty (a new node each time) and point the symlink at it."""
        if self.master is not None:
            return
        self._loop = asyncio.get_running_loop()
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass as they are
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.node = os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.node)
        tmp.replace(self.link)
        self._loop.add_reader(master, self._readable)

    def unplug(self) -> None:
        if self.master is None:
            return
        if self._loop:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.master)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)  # type: ignore[arg-type]
        self.master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    def _readable(self) -> None:
        if self.master is None:
            return
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # nobody has the slave open right now (EIO); keep listening
        if data:
            self.on_bytes(data)

    def write(self, data: bytes) -> None:
        if self.master is None:
            return  # unplugged: the bytes go nowhere, as on a pulled cable
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                continue
            except OSError:
                return
            view = view[n:]
