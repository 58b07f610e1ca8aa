"""R30x/AS608 fingerprint sensors at windows: enrol staff, identify them (login, spot checks).

One driver per sensor on the shared supervised Link (a USB-UART adapter). The module is
half-duplex, so one operation runs at a time. Every command waits at most `reply_timeout_ms`
for its acknowledgement and every "place your finger" at most `finger_wait_ms`: an operation
always ends, with a result or a clear error, even when the sensor never answers. A sensor that
stops answering is reported offline (grade C: staff can still log in with their PIN) and probed
until it answers again.

Which staff member a library page belongs to is kept in the `fingerprint_templates` table,
written in the same transaction as the `fingerprint.enrolled` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from drivers.base import DeviceHealthReporter, DeviceOffline, Link
from drivers.protocols import r30x
from drivers.protocols.r30x import Confirm, Instr
from edge.config.supervision_devices import FingerprintSensorConfig
from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.runtime import HallRuntime
from edge.sensors import SensorFailure
from edge.store import Store

log = logging.getLogger(__name__)

class SensorError(SensorFailure):
    """code: sensor-timeout | finger-timeout | sensor-offline | sensor-refused …"""


class FingerprintDriver:
    def __init__(self, rt: HallRuntime, cfg: FingerprintSensorConfig, *,
                 endpoint: str | None = None, poll_interval: float = 0.05,
                 probe_interval: float = 5.0) -> None:
        self.rt = rt
        self.cfg = cfg
        self.name = f"fingerprint-{cfg.id}"
        self.reply_timeout = cfg.reply_timeout_ms / 1000
        self.finger_wait = cfg.finger_wait_ms / 1000
        self.poll_interval = poll_interval
        self.probe_interval = probe_interval
        self.link = Link(self.name, endpoint or cfg.port, baudrate=cfg.baudrate,
                         on_data=self._on_data, on_up=self._on_up, on_down=self._on_down,
                         backoff_min=0.05, backoff_max=1.0)
        self.health = DeviceHealthReporter(rt, cfg.id, "fingerprint", "C")
        self.decoder = r30x.R30xDecoder()
        self.answering = False
        self.timeouts = 0
        self._acks: asyncio.Queue[r30x.R30xPacket] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._busy: str | None = None  # the purpose of the operation holding the sensor
        self._logins: set[asyncio.Task[Any]] = set()  # login identifications, pre-emptible
        self._probe: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # the module answered its handshake
        self.id = cfg.id
        self.window = cfg.window

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.link.start()

    async def stop(self) -> None:
        self._stop_probe()
        await self.link.stop()

    def _stop_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def _on_up(self) -> None:
        self.decoder = r30x.R30xDecoder()
        self._acks = asyncio.Queue()
        self._stop_probe()
        self._probe = asyncio.get_running_loop().create_task(self._prober())

    def _on_down(self, reason: str) -> None:
        self._stop_probe()
        self.answering = False
        self.ready.clear()
        self.health.offline(f"sensor unplugged: {reason}", self._metrics())

    def _metrics(self) -> dict[str, int]:
        return {"timeouts": self.timeouts, "dropped_packets": self.decoder.stats.dropped,
                "connects": self.link.connects}

    async def _prober(self) -> None:
        """Handshake, then a cheap command now and then, so a dead module is noticed."""
        first = True
        while True:
            if not self._lock.locked():
                try:
                    async with self._lock:
                        code, _ = await self._cmd(Instr.VFY_PWD if first
                                                  else Instr.TEMPLATE_NUM,
                                                  r30x.password(0) if first else b"")
                    if code == Confirm.WRONG_PASSWORD:
                        self.health.degraded("C", "the module refuses the password")
                    else:
                        first = False
                        self.ready.set()
                except SensorError:
                    pass  # _cmd reported it
            await asyncio.sleep(self.probe_interval if not first else self.reply_timeout)

    # ---- the wire ------------------------------------------------------------------------
    def _on_data(self, chunk: bytes) -> None:
        for p in self.decoder.feed(chunk):
            if p.pid == r30x.Pid.ACK:
                self._acks.put_nowait(p)

    async def _cmd(self, instr: int, params: bytes = b"") -> tuple[int, bytes]:
        """One command, one acknowledgement, or SensorError; never waits longer than set."""
        while not self._acks.empty():
            self._acks.get_nowait()  # a late answer to an earlier, timed-out command
        try:
            self.link.send(r30x.command(instr, params, self.cfg.address))
        except DeviceOffline as e:
            raise SensorError("sensor-offline", f"sensor {self.cfg.id} is unplugged") from e
        try:
            p = await asyncio.wait_for(self._acks.get(), self.reply_timeout)
        except TimeoutError:
            self.timeouts += 1
            if self.answering or self.timeouts == 1:
                self.health.offline(f"no answer within {self.cfg.reply_timeout_ms} ms",
                                    self._metrics())
            self.answering = False
            self.ready.clear()
            raise SensorError("sensor-timeout", f"sensor {self.cfg.id} did not answer within "
                              f"{self.cfg.reply_timeout_ms} ms") from None
        if not self.answering:
            self.answering = True
            self.health.ok("answering", self._metrics())
        return p.code, p.params

    async def _ok(self, instr: int, params: bytes = b"") -> bytes:
        code, results = await self._cmd(instr, params)
        if code != Confirm.OK:
            raise SensorError("sensor-refused", f"{Instr(instr).name}: {r30x.confirm_text(code)}")
        return results

    async def _wait_finger(self, present: bool = True) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.finger_wait
        while True:
            code, _ = await self._cmd(Instr.GEN_IMG)
            if (present and code == Confirm.OK) or (not present and code == Confirm.NO_FINGER):
                return
            if code not in (Confirm.OK, Confirm.NO_FINGER):
                raise SensorError("sensor-refused", f"GenImg: {r30x.confirm_text(code)}")
            if loop.time() >= end:
                what = "placed" if present else "lifted"
                raise SensorError("finger-timeout", f"no finger {what} within "
                                  f"{self.cfg.finger_wait_ms} ms")
            await asyncio.sleep(self.poll_interval)

    # ---- operations ----------------------------------------------------------------------
    def pages(self) -> dict[int, str]:
        return self.rt.store.fingerprint_pages(self.cfg.id)

    async def enrol(self, staff: str) -> int:
        """Two images of one finger → a template stored at the next free page."""
        if staff not in self.rt.hall.staff:
            raise SensorError("unknown-staff", f"no staff {staff!r}")
        async with self._lock, self._holding("enrol"):
            used = self.pages()
            page = next((p for p in range(self.cfg.capacity) if p not in used), None)
            if page is None:
                raise SensorError("library-full", f"all {self.cfg.capacity} pages are used")
            await self._wait_finger()
            await self._ok(Instr.IMG2TZ, r30x.img2tz(1))
            await self._wait_finger(present=False)
            await self._wait_finger()
            await self._ok(Instr.IMG2TZ, r30x.img2tz(2))
            await self._ok(Instr.REG_MODEL)
            await self._ok(Instr.STORE, r30x.store(1, page))
            now = rfc3339(self.rt.hall.local())

            await self.rt.record([DomainEvent("fingerprint.enrolled", {
                "sensor": self.cfg.id, "window": self.cfg.window, "staff": staff,
                "page": page})], writes=[Store.remember_template(self.cfg.id, page, staff, now)])
            return page

    @contextlib.asynccontextmanager
    async def _holding(self, purpose: str) -> AsyncIterator[None]:
        self._busy = purpose
        try:
            yield
        finally:
            self._busy = None

    async def identify(self, purpose: str = "spot_check") -> dict[str, Any]:
        """One finger → who it is (or nobody), recorded as an event.

        A login never queues: with the sensor busy it is refused (sensor-busy). A spot check
        pre-empts a pending login. An operation that had to wait for another one first waits
        for the glass to be empty, so a finger placed for one purpose is never read for
        another."""
        if purpose == "login" and self._busy is not None:
            raise SensorError("sensor-busy", f"sensor {self.cfg.id} is busy ({self._busy})")
        if purpose != "login":
            for t in list(self._logins):
                t.cancel()
        waited = self._busy is not None
        task = asyncio.current_task()
        async with self._lock, self._holding(purpose):
            if purpose == "login" and task is not None:
                self._logins.add(task)
            try:
                if waited:
                    await self._wait_finger(present=False)
                return await self._identify(purpose)
            finally:
                self._logins.discard(task)  # type: ignore[arg-type]

    async def _identify(self, purpose: str) -> dict[str, Any]:
        await self._wait_finger()
        await self._ok(Instr.IMG2TZ, r30x.img2tz(1))
        code, results = await self._cmd(Instr.SEARCH, r30x.search(1, 0, self.cfg.capacity))
        if code not in (Confirm.OK, Confirm.NOT_FOUND):
            raise SensorError("sensor-refused", f"Search: {r30x.confirm_text(code)}")
        page = score = None
        staff = None
        if code == Confirm.OK:
            page, score = r30x.parse_search(results)
            staff = self.pages().get(page)
        data = {"sensor": self.cfg.id, "window": self.cfg.window,
                "matched": staff is not None, "staff": staff, "page": page,
                "score": score, "purpose": purpose}
        await self.rt.record([DomainEvent("fingerprint.identified", data)])
        return data
