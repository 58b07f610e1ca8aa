"""The shared supervised transport every device driver sits on.

A `Link` owns one byte stream to one device or one RS-485 bus: a serial port (a real tty, a USB
adapter, or a simulator's pseudo-terminal) opened through pyserial, or a TCP socket (network
printers on 9100), or a USB printer-class device through pyusb (``usb://vendor:product``). It
runs on the asyncio loop thread with non-blocking file descriptors (``loop.add_reader``/
``add_writer``), so blocking I/O never stalls the queue. libusb has no such descriptor to poll, so
a USB link reads bulk IN on its own thread (short timeouts) and writes bulk OUT on a second one;
their results come back to the loop thread by ``call_soon_threadsafe``.

Supervision: every way the OS or a library can say "the device is gone" (EIO on a pty whose
master closed, EOF, ECONNRESET, a SerialException, a termios error, a USBError such as ENODEV,
EIO or EPIPE, a USB device no longer enumerated, a failed open ...) goes through
``Link._fail`` and becomes ONE failure: the link closes, ``on_down(reason)`` runs once, and the
supervisor reopens with capped exponential backoff. A serial path is resolved again on every
attempt (``/dev/serial/by-id/...`` or a udev/simulator symlink), and a USB device is looked up
in enumeration again, so a replugged device with a new node or bus address is found. One link
failing never touches another link or the queue.

`DeviceHealthReporter` turns up/down/degraded states into ``rt.health.report`` calls with the
fault grades A/B/C of docs/hall.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import termios
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import serial

from drivers.usb_transport import UsbAddress, UsbPort, parse_usb
from edge.health import DeviceHealth, Grade

if TYPE_CHECKING:
    from edge.runtime import HallRuntime

log = logging.getLogger(__name__)

# Bulk IN is polled with a short timeout so a stop or unplug is noticed quickly; a DLE EOT
# answer is one byte, a full-speed packet 64.
USB_READ_SIZE = 512
USB_READ_MS = 100
USB_WRITE_MS = 5000  # a printer that accepts nothing for 5 s is treated as gone
USB_WRITE_CHUNK = 16384
_TCP = re.compile(r"^tcp://(?P<host>\[[0-9a-fA-F:]+\]|[^:/]+):(?P<port>\d+)$")


class DeviceOffline(Exception):
    """The device is not connected now; the caller decides whether to queue or drop."""


@dataclass(frozen=True)
class Endpoint:
    """Where a device is: a path (serial/pty/symlink), host:port, or a USB vendor:product.

    `usb_backend` is the pyusb backend to enumerate with: None is pyusb's default (libusb-1.0);
    the USB printer simulator passes its own.
    """

    path: str | None = None
    host: str | None = None
    port: int | None = None
    usb: UsbAddress | None = None
    usb_backend: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, usb_backend: Any = None) -> Endpoint:
        m = _TCP.match(text)
        if m:
            return cls(host=m.group("host").strip("[]"), port=int(m.group("port")))
        if text.startswith("/"):
            return cls(path=text)
        if text.startswith("usb://"):
            return cls(usb=parse_usb(text), usb_backend=usb_backend)
        raise ValueError(f"not a device path, tcp://host:port or usb://vendor:product: {text!r}")

    def __str__(self) -> str:
        if self.usb is not None:
            return str(self.usb)
        return self.path if self.path else f"tcp://{self.host}:{self.port}"


OnData = Callable[[bytes], None]
OnUp = Callable[[], None]
OnDown = Callable[[str], None]


class Link:
    """A supervised, reconnecting byte link. Use only from the loop thread."""

    def __init__(self, name: str, endpoint: Endpoint | str, *, baudrate: int = 9600,
                 on_data: OnData | None = None, on_up: OnUp | None = None,
                 on_down: OnDown | None = None, backoff_min: float = 0.05,
                 backoff_max: float = 0.5) -> None:
        self.name = name
        self.endpoint = Endpoint.parse(endpoint) if isinstance(endpoint, str) else endpoint
        self.baudrate = baudrate
        self.on_data = on_data or (lambda _b: None)
        self.on_up = on_up or (lambda: None)
        self.on_down = on_down or (lambda _r: None)
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.online = False
        self.connects = 0
        self.failures = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.resolved: str | None = None  # the node a path resolved to on the last open
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tcp_task: asyncio.Task[None] | None = None
        self._usb: UsbPort | None = None
        self._usb_stop: threading.Event | None = None
        self._usb_writer: ThreadPoolExecutor | None = None
        self._out = bytearray()
        self._writing = False
        self._flush_due = False  # a flush is scheduled for the end of this loop turn
        self._drained: asyncio.Event | None = None
        self._down: asyncio.Future[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._expect: tuple[int, bytearray, asyncio.Future[bytes]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quiet = False  # open failures already logged for this outage
        self._request_lock = asyncio.Lock()

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task = asyncio.create_task(self._supervise(), name=f"link-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._close()

    async def wait_online(self, timeout: float) -> bool:
        """For start-up and tests: True once the link is up."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.online and loop.time() < end:
            await asyncio.sleep(0.01)
        return self.online

    async def _supervise(self) -> None:
        assert self._loop
        delay = self.backoff_min
        while True:
            try:
                await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any open failure is the same: not there yet
                if not self._quiet:
                    log.warning("%s: cannot open %s: %s; retrying", self.name, self.endpoint, e)
                    self._quiet = True
                    self.on_down(f"cannot open {self.endpoint}: {e}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_min
            self._quiet = False
            self.online = True
            self.connects += 1
            self._down = self._loop.create_future()
            if self.connects > 1:
                log.info("%s: reconnected to %s", self.name, self.resolved or self.endpoint)
            try:
                self.on_up()
            except Exception:
                log.exception("%s: on_up failed", self.name)
            reason = await self._down
            self.online = False
            self.failures += 1
            self._close()
            log.warning("%s: lost (%s)", self.name, reason)
            self._quiet = True
            try:
                self.on_down(reason)
            except Exception:
                log.exception("%s: on_down failed", self.name)
            await asyncio.sleep(self.backoff_min)

    async def _open(self) -> None:
        assert self._loop
        ep = self.endpoint
        if ep.path is not None:
            # Resolve again each time: a by-id or simulator symlink moves to the new node.
            real = os.path.realpath(ep.path)
            if not os.path.exists(real):
                raise FileNotFoundError(errno.ENOENT, "no such device", ep.path)
            ser = serial.Serial(real, self.baudrate, timeout=0, write_timeout=0)
            fd = ser.fileno()
            os.set_blocking(fd, False)
            with contextlib.suppress(termios.error):
                termios.tcflush(fd, termios.TCIOFLUSH)
            self._serial, self._fd, self.resolved = ser, fd, real
            self._loop.add_reader(fd, self._readable)
        elif ep.usb is not None:
            await self._open_usb(ep.usb, ep.usb_backend)
        else:
            assert ep.host and ep.port
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(ep.host, ep.port), timeout=2.0)
            self._reader, self._writer = reader, writer
            self.resolved = f"{ep.host}:{ep.port}"
            self._tcp_task = asyncio.create_task(self._tcp_read(reader))

    def _close(self) -> None:
        if self._fd is not None and self._loop:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
        if self._tcp_task is not None:
            self._tcp_task.cancel()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._usb_stop is not None:
            # The reader thread releases the device once its read returns (within
            # USB_READ_MS) and the pending write is done: nothing is released mid-transfer.
            self._usb_stop.set()
        self._serial = self._fd = self._reader = self._writer = self._tcp_task = None
        self._usb = self._usb_stop = self._usb_writer = None
        self._writing = False
        self._out.clear()
        if self._drained:
            self._drained.set()
        if self._expect and not self._expect[2].done():
            self._expect[2].set_exception(DeviceOffline(f"{self.name} went offline"))
        self._expect = None

    def _fail(self, reason: str) -> None:
        """The one place every transport error ends up."""
        if self._down is not None and not self._down.done():
            self._down.set_result(reason)
        if self._fd is not None and self._loop:
            # Stop the reader at once: a dead pty stays readable (EIO) and would spin.
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)

    # ---- USB ---------------------------------------------------------------------------
    async def _open_usb(self, addr: UsbAddress, backend: Any) -> None:
        assert self._loop
        opening = self._loop.run_in_executor(None, UsbPort.open, addr, backend)
        try:
            port = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Stopped mid-open: the thread still finishes; release what it claims.
            opening.add_done_callback(
                lambda f: f.cancelled() or f.exception() is not None or f.result().close())
            raise
        stop = threading.Event()
        self._usb, self._usb_stop = port, stop
        self._usb_writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-out")
        self.resolved = port.describe()
        threading.Thread(target=self._usb_read_loop, args=(port, stop, self._usb_writer),
                         name=f"{self.name}-in", daemon=True).start()

    def _usb_read_loop(self, port: UsbPort, stop: threading.Event,
                       writer: ThreadPoolExecutor) -> None:
        """Reader thread: bulk IN → the loop; any error → the one failure path."""
        loop = self._loop
        assert loop
        try:
            while not stop.is_set():
                try:
                    data = port.read(USB_READ_SIZE, USB_READ_MS)
                except Exception as e:
                    if not stop.is_set():
                        with contextlib.suppress(RuntimeError):  # the loop has closed
                            loop.call_soon_threadsafe(self._usb_failed, port, f"read: {e}")
                    return
                if data:
                    try:
                        loop.call_soon_threadsafe(self._usb_data, port, data)
                    except RuntimeError:
                        return
        finally:
            writer.shutdown(wait=True)
            port.close()

    def _usb_data(self, port: UsbPort, data: bytes) -> None:
        if port is self._usb:  # a late read from a port already closed is dropped
            self._deliver(data)

    def _usb_failed(self, port: UsbPort, reason: str) -> None:
        if port is self._usb:
            self._fail(reason)

    async def _usb_flush(self) -> None:
        """Hand queued bytes to bulk OUT on the writer thread, in order."""
        assert self._loop
        port, writer = self._usb, self._usb_writer
        try:
            while self._out and port is not None and port is self._usb and writer:
                chunk = bytes(self._out[:USB_WRITE_CHUNK])
                try:
                    n = await self._loop.run_in_executor(writer, port.write, chunk,
                                                         USB_WRITE_MS)
                except Exception as e:  # timeout included: a printer that takes nothing
                    self._usb_failed(port, f"write: {e}")
                    return
                if port is not self._usb:
                    return
                self.bytes_out += n
                del self._out[:n]
        finally:
            if port is self._usb:
                self._writing = False
                if not self._out and self._drained:
                    self._drained.set()

    # ---- reading -------------------------------------------------------------------------
    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(f"read: {os.strerror(e.errno) if e.errno else e}")
            return
        if not data:
            self._fail("end of file")
            return
        self._deliver(data)

    async def _tcp_read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    self._fail("connection closed by peer")
                    return
                self._deliver(data)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._fail(f"read: {e}")

    def _deliver(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._expect is not None:
            n, buf, fut = self._expect
            buf += data
            if len(buf) >= n and not fut.done():
                fut.set_result(bytes(buf[:n]))
                self._expect = None
                data = bytes(buf[n:])
                if not data:
                    return
            else:
                return
        try:
            self.on_data(data)
        except Exception:
            log.exception("%s: handler failed on %d bytes", self.name, len(data))

    async def request(self, data: bytes, nbytes: int, timeout: float) -> bytes:
        """Flush input, send `data`, return the next `nbytes` (status queries like DLE EOT)."""
        async with self._request_lock:  # one question on the wire at a time
            return await self._request(data, nbytes, timeout)

    async def _request(self, data: bytes, nbytes: int, timeout: float) -> bytes:
        if not self.online:
            raise DeviceOffline(f"{self.name} is offline")
        assert self._loop
        if self._fd is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcflush(self._fd, termios.TCIFLUSH)
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._expect = (nbytes, bytearray(), fut)
        self.send(data)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if self._expect is not None and self._expect[2] is fut:
                self._expect = None

    # ---- writing -------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue bytes for the device; raises DeviceOffline when it is not connected."""
        if not self.online:
            raise DeviceOffline(f"{self.name} is offline")
        if self._writer is not None:
            self._writer.write(data)
            self.bytes_out += len(data)
            return
        self._out += data
        if self._drained:
            self._drained.clear()
        if self._usb is not None:
            if not self._writing and self._loop:
                self._writing = True
                self._loop.create_task(self._usb_flush())
            return
        if not self._writing and not self._flush_due and self._loop is not None:
            # Written once at the end of this loop turn, not per frame: 250 windows calling
            # at once queue a board frame, an ack and a display per call, and a write(2)
            # on a tty costs about as much as encoding the frame. Bytes keep their order.
            self._flush_due = True
            self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_due = False
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        fd = self._fd
        if fd is None:
            return
        while self._out:
            try:
                n = os.write(fd, self._out)
            except BlockingIOError:
                if not self._writing and self._loop:
                    self._writing = True
                    self._loop.add_writer(fd, self._flush)
                return
            except OSError as e:
                self._fail(f"write: {os.strerror(e.errno) if e.errno else e}")
                return
            self.bytes_out += n
            del self._out[:n]
        if self._writing and self._loop:
            self._writing = False
            with contextlib.suppress(Exception):
                self._loop.remove_writer(fd)
        if self._drained:
            self._drained.set()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued byte is handed to the OS (or the link dropped)."""
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer.drain(), timeout)
            except (ConnectionError, OSError) as e:
                self._fail(f"write: {e}")
                raise DeviceOffline(str(e)) from e
            return
        if self._drained:
            await asyncio.wait_for(self._drained.wait(), timeout)
            if not self.online:
                # Drained because the link dropped (its queue was cleared), not written.
                raise DeviceOffline(f"{self.name} went offline while writing")


class DeviceHealthReporter:
    """Health for one configured device: reported through rt.health on the loop thread."""

    def __init__(self, rt: HallRuntime, device: str, device_class: str,
                 offline_grade: Grade) -> None:
        self.rt = rt
        self.device = device
        self.device_class = device_class
        self.offline_grade: Grade = offline_grade

    def ok(self, detail: str = "", metrics: dict[str, int] | None = None) -> None:
        self._report(True, None, detail, metrics)

    def degraded(self, grade: Grade, detail: str,
                 metrics: dict[str, int] | None = None) -> None:
        self._report(True, grade, detail, metrics)

    def offline(self, detail: str, metrics: dict[str, int] | None = None) -> None:
        self._report(False, self.offline_grade, detail, metrics)

    def update_metrics(self, metrics: dict[str, int]) -> None:
        """Same state, fresh counters (not journaled: only state changes are events)."""
        cur = self.rt.health.current.get(self.device)
        if cur is not None:
            self._report(cur.online, cur.grade, cur.detail, metrics)

    def _report(self, online: bool, grade: Grade | None, detail: str,
                metrics: dict[str, int] | None) -> None:
        try:
            self.rt.health.report(DeviceHealth(self.device, self.device_class, online, grade,
                                               detail, metrics))
        except Exception:
            # The journal refusing a health event must not take the driver down with it.
            log.exception("%s: health report failed", self.device)


class SharedBus:
    """One RS-485 line shared by several drivers (boards, keypads, evaluators).

    The bus is one Link; each driver attaches its handlers and sees every byte and every
    up/down. A handler that raises is logged and never affects the other drivers.
    """

    def __init__(self, bus_id: str, endpoint: Endpoint | str, baudrate: int = 9600) -> None:
        self.bus_id = bus_id
        self.name = f"bus-{bus_id}"
        self._data: list[OnData] = []
        self._up: list[OnUp] = []
        self._down: list[OnDown] = []
        self.link = Link(self.name, endpoint, baudrate=baudrate, on_data=self._on_data,
                         on_up=self._on_up, on_down=self._on_down)

    def attach(self, on_data: OnData | None = None, on_up: OnUp | None = None,
               on_down: OnDown | None = None) -> None:
        if on_data:
            self._data.append(on_data)
        if on_up:
            self._up.append(on_up)
        if on_down:
            self._down.append(on_down)

    async def start(self) -> None:
        await self.link.start()

    async def stop(self) -> None:
        await self.link.stop()

    @staticmethod
    def _each(fns: list[Callable[..., None]], *args: object) -> None:
        for fn in list(fns):
            try:
                fn(*args)
            except Exception:
                log.exception("bus handler %s failed", getattr(fn, "__qualname__", fn))

    def _on_data(self, data: bytes) -> None:
        self._each(self._data, data)

    def _on_up(self) -> None:
        self._each(self._up)

    def _on_down(self, reason: str) -> None:
        self._each(self._down, reason)
