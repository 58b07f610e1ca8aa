"""Fingerprint attendance (指纹考勤) from ZKTeco-protocol terminals on the LAN.

One driver per terminal, on the shared supervised Link (TCP). On every connect it registers for
live punches first and then pulls every stored record, so a punch made while the box or the
link was down arrives after the reconnect, and one made during the pull is not missed. Each
punch is recorded once: its key (terminal, user id, time, verify mode, state) goes into the
`attendance_seen` table in the same SQLite transaction as its `punch.recorded` event, so a
restart or a second pull never records it twice. Every request has a timeout; a terminal that
stops answering is dropped and reconnected like an unplugged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from drivers.base import DeviceHealthReporter, Endpoint, Link
from drivers.protocols import zk
from edge.config.supervision_devices import AttendanceTerminalConfig
from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.runtime import HallRuntime
from edge.store import Store

log = logging.getLogger(__name__)

class ZkError(Exception):
    """The terminal answered, but not as the protocol says."""


class AttendanceDriver:
    def __init__(self, rt: HallRuntime, cfg: AttendanceTerminalConfig, *,
                 endpoint: str | None = None, probe_interval: float = 5.0) -> None:
        self.rt = rt
        self.cfg = cfg
        self.name = f"attendance-{cfg.id}"
        self.timeout = cfg.timeout_ms / 1000
        self.probe_interval = probe_interval
        ep = Endpoint.parse(f"tcp://{endpoint}") if endpoint else \
            Endpoint(host=cfg.host, port=cfg.port)
        self.link = Link(self.name, ep, on_data=self._on_data, on_up=self._on_up,
                         on_down=self._on_down, backoff_min=0.1, backoff_max=5.0)
        self.health = DeviceHealthReporter(rt, cfg.id, "attendance", "C")
        self.decoder = zk.ZkDecoder()
        self.session = 0
        self.reply_id = 0
        self.names: dict[str, str] = {}
        self.recorded = 0
        self.duplicates = 0
        self.bad_records = 0
        self.synced = asyncio.Event()  # set after each completed pull (tests, start-up)
        self._replies: asyncio.Queue[zk.ZkPacket] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Punches recorded by this driver whose commit may still be in flight.
        self._recorded: set[tuple[str, str, str, int, int]] = set()

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.link.start()

    async def stop(self) -> None:
        self._cancel()
        if self.link.online:
            with contextlib.suppress(Exception):
                self._send(zk.CMD_EXIT)
                await self.link.drain(1.0)
        await self.link.stop()

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _on_up(self) -> None:
        self.decoder = zk.ZkDecoder()
        self._replies = asyncio.Queue()
        self.synced.clear()
        self._task = asyncio.get_running_loop().create_task(self._session())

    def _on_down(self, reason: str) -> None:
        self._cancel()
        self.health.offline(f"terminal {self.cfg.host}:{self.cfg.port} unreachable: {reason}"
                            if "cannot open" in reason else f"link lost: {reason}",
                            self._metrics())

    def _metrics(self) -> dict[str, int]:
        return {"recorded": self.recorded, "duplicates": self.duplicates,
                "bad_records": self.bad_records, "dropped_packets": self.decoder.stats.dropped,
                "connects": self.link.connects}

    # ---- the conversation ----------------------------------------------------------------
    def _send(self, command: int, data: bytes = b"", reply: int | None = None) -> int:
        if reply is None:
            # 1..65534: 0 is what the terminal's own live events carry.
            self.reply_id = self.reply_id % (zk.USHRT_MAX - 1) + 1
            reply = self.reply_id
        self.link.send(zk.encode(zk.ZkPacket(command, self.session, reply, data)))
        return reply

    async def _reply(self, reply: int) -> zk.ZkPacket:
        while True:
            p = await asyncio.wait_for(self._replies.get(), self.timeout)
            if p.reply == reply:
                return p
            # A late answer to a request that already timed out: skip it.

    async def _request(self, command: int, data: bytes = b"") -> zk.ZkPacket:
        p = await self._reply(self._send(command, data))
        if p.command == zk.CMD_ACK_UNAUTH:
            raise ZkError(f"command {command} refused: not connected (ACK_UNAUTH)")
        if p.command not in (zk.CMD_ACK_OK, zk.CMD_PREPARE_DATA, zk.CMD_DATA, zk.CMD_ACK_DATA):
            raise ZkError(f"command {command} answered with {p.command}")
        return p

    async def _read_block(self, command: int, data: bytes = b"") -> bytes:
        """A data request: PREPARE_DATA(size), DATA chunks, ACK_OK; then FREE_DATA."""
        reply = self._send(command, data)
        first = await self._reply(reply)
        if first.command in (zk.CMD_DATA, zk.CMD_ACK_DATA):
            return first.data  # small answers come inline
        if first.command != zk.CMD_PREPARE_DATA or len(first.data) < 4:
            raise ZkError(f"command {command}: expected PREPARE_DATA, got {first.command}")
        (size,) = struct.unpack_from("<I", first.data)
        if size > 64 * 1024 * 1024:
            raise ZkError(f"terminal announces {size} bytes; refusing")
        block = bytearray()
        while True:
            p = await self._reply(reply)
            if p.command == zk.CMD_DATA:
                block += p.data
                if len(block) > size:
                    raise ZkError(f"terminal sent {len(block)} bytes, announced {size}")
            elif p.command == zk.CMD_ACK_OK:
                break
            else:
                raise ZkError(f"unexpected {p.command} inside a data transfer")
        if len(block) != size:
            raise ZkError(f"data transfer ended at {len(block)} of {size} bytes")
        await self._request(zk.CMD_FREE_DATA)
        return bytes(block)

    async def _session(self) -> None:
        try:
            self.session, self.reply_id = 0, 0
            p = await self._request(zk.CMD_CONNECT)
            if p.command != zk.CMD_ACK_OK:
                raise ZkError("CMD_CONNECT was not acknowledged")
            self.session = p.session
            users, bad = zk.unpack_users(await self._read_block(zk.CMD_USERTEMP_RRQ,
                                                                bytes([zk.FCT_USER])),
                                         self.cfg.encoding)
            self.bad_records += bad
            self.names = {u.user_id: u.name for u in users}
            # Live first, then the stored log: a punch made in between is in one or the other
            # (or both; the seen table drops the second copy).
            await self._request(zk.CMD_REG_EVENT, struct.pack("<I", zk.EF_ATTLOG))
            punches, bad = zk.unpack_attlog(await self._read_block(zk.CMD_ATTLOG_RRQ))
            self.bad_records += bad
            new = self._record(punches, "stored")
            await self.rt.record([DomainEvent("attendance.synced", {
                "terminal": self.cfg.id, "stored": len(punches), "new": new,
                "bad_records": bad, "users": len(users)})])
            self.health.ok(f"{len(users)} users, {len(punches)} stored punches",
                           self._metrics())
            self.synced.set()
            while True:
                await asyncio.sleep(self.probe_interval)
                await self._request(zk.CMD_GET_TIME)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self.link._fail(f"no answer within {self.cfg.timeout_ms} ms")
        except Exception as e:
            log.warning("%s: %s", self.name, e)
            self.link._fail(f"protocol error: {e}")

    def _on_data(self, chunk: bytes) -> None:
        for p in self.decoder.feed(chunk):
            if p.command == zk.CMD_REG_EVENT:
                self._on_live(p)
            else:
                self._replies.put_nowait(p)

    def _on_live(self, p: zk.ZkPacket) -> None:
        with contextlib.suppress(Exception):
            self._send(zk.CMD_ACK_OK, reply=0)
        if not p.session & zk.EF_ATTLOG:
            return
        try:
            punch = zk.unpack_live(p.data)
        except ValueError as e:
            self.bad_records += 1
            log.warning("%s: bad live punch: %s", self.name, e)
            return
        try:
            self._record([punch], "live")
        except Exception:
            # Not lost: the terminal keeps it, and the next pull records it.
            log.exception("%s: could not record a live punch; the next pull will", self.name)

    # ---- recording -----------------------------------------------------------------------
    def _record(self, punches: list[zk.ZkPunch], source: str) -> int:
        hall = self.rt.hall
        events: list[DomainEvent] = []
        keys: list[tuple[str, str, str, int, int]] = []
        batch: set[tuple[str, str, str, int, int]] = set()
        for p in punches:
            at = rfc3339(p.when.replace(tzinfo=hall.tz))  # the terminal's wall clock is local
            key = (self.cfg.id, p.user_id, at, p.status, p.punch)
            if key in batch or key in self._recorded or self.rt.store.punch_seen(key):
                self.duplicates += 1
                continue
            batch.add(key)
            keys.append(key)
            staff = self.cfg.users.get(p.user_id) or (
                p.user_id if p.user_id in hall.staff else None)
            events.append(DomainEvent("punch.recorded", {
                "terminal": self.cfg.id, "user_id": p.user_id, "staff": staff,
                "name": self.names.get(p.user_id) or (hall.staff[staff].name
                                                      if staff in hall.staff else None),
                "at": at, "kind": zk.PUNCH_KINDS.get(p.punch, f"state_{p.punch}"),
                "punch": p.punch, "verify": p.status, "source": source,
            }))
        if not events:
            return 0

        self.rt.post(events, writes=[Store.remember_punches(keys)])
        self._recorded.update(keys)
        self.recorded += len(events)
        return len(events)
