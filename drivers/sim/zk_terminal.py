"""A simulated ZKTeco attendance terminal: TCP on loopback, speaking drivers.protocols.zk.

It keeps users (names stored in GBK, as Chinese firmware does) and every punch in its own
memory, like the real terminal's flash, and pushes live punches to clients that registered for
EF_ATTLOG. Tests and `hallbox run --sim` drive it with `punch()`; `unplug()` drops every client
and stops listening (the terminal left the LAN), `replug()` listens again on the same port.
`silent = True` makes it swallow requests without answering (a hung terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Callable
from datetime import datetime

from drivers.protocols import zk

log = logging.getLogger(__name__)
CHUNK = 1024  # bytes of DATA per CMD_DATA packet, as small terminals send


class ZkTerminalSim:
    def __init__(self, users: list[zk.ZkUser], *, host: str = "127.0.0.1", port: int = 0,
                 encoding: str = "gbk") -> None:
        self.users = list(users)
        self.records: list[zk.ZkPunch] = []
        self.host, self.port = host, port
        self.encoding = encoding
        self.silent = False
        # Runs after the stored log is read for a pull and before it is sent: a punch made
        # here is in neither that pull nor (without live registration) anywhere else.
        self.during_pull: Callable[[], None] | None = None
        self.server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._live: set[asyncio.StreamWriter] = set()
        self._sessions = itertools.count(0x1234)
        self.connects = 0
        self.bad_packets = 0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                 reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.unplug()

    async def unplug(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self._clients):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        self._clients.clear()
        self._live.clear()

    async def replug(self) -> None:
        await self.start()

    def punch(self, user_id: str, when: datetime | None = None, punch: int = 0,
              status: int = 1) -> zk.ZkPunch:
        """A staff member presses a finger: stored, and pushed live to registered clients."""
        uid = next((u.uid for u in self.users if u.user_id == user_id), 0)
        p = zk.ZkPunch(user_id, (when or datetime.now()).replace(microsecond=0), status,
                       punch, uid)
        self.records.append(p)
        for w in list(self._live):
            with contextlib.suppress(Exception):
                w.write(zk.encode(zk.ZkPacket(zk.CMD_REG_EVENT, zk.EF_ATTLOG, 0,
                                              zk.pack_live(p))))
        return p

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        dec = zk.ZkDecoder()
        session: int | None = None
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                for p in dec.feed(chunk):
                    if self.silent:
                        continue
                    session = self._answer(p, session, writer)
                    if session == -1:
                        return
                self.bad_packets = dec.stats.dropped
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            self._live.discard(writer)
            writer.close()

    def _reply(self, w: asyncio.StreamWriter, cmd: int, session: int, p: zk.ZkPacket,
               data: bytes = b"") -> None:
        w.write(zk.encode(zk.ZkPacket(cmd, session, p.reply, data)))

    def _answer(self, p: zk.ZkPacket, session: int | None, w: asyncio.StreamWriter) -> int | None:
        if p.command == zk.CMD_CONNECT:
            session = next(self._sessions) & 0xFFFF
            self.connects += 1
            self._reply(w, zk.CMD_ACK_OK, session, p)
            return session
        if session is None or p.session != session:
            self._reply(w, zk.CMD_ACK_UNAUTH, p.session, p)
            return session
        if p.command == zk.CMD_EXIT:
            self._reply(w, zk.CMD_ACK_OK, session, p)
            w.close()
            return -1
        if p.command == zk.CMD_GET_TIME:
            self._reply(w, zk.CMD_ACK_OK, session, p,
                        struct.pack("<I", zk.encode_time(datetime.now())))
        elif p.command == zk.CMD_USERTEMP_RRQ:
            self._send_data(w, session, p, zk.pack_users(self.users, self.encoding))
        elif p.command == zk.CMD_ATTLOG_RRQ:
            block = zk.pack_attlog(self.records)
            if self.during_pull is not None:
                self.during_pull()
            self._send_data(w, session, p, block)
        elif p.command == zk.CMD_FREE_DATA:
            self._reply(w, zk.CMD_ACK_OK, session, p)
        elif p.command == zk.CMD_REG_EVENT:
            if len(p.data) >= 4 and struct.unpack_from("<I", p.data)[0] & zk.EF_ATTLOG:
                self._live.add(w)
            else:
                self._live.discard(w)
            self._reply(w, zk.CMD_ACK_OK, session, p)
        elif p.command in (zk.CMD_ACK_OK, zk.CMD_ENABLEDEVICE, zk.CMD_DISABLEDEVICE):
            if p.command != zk.CMD_ACK_OK:  # the client's ack of a live event needs no answer
                self._reply(w, zk.CMD_ACK_OK, session, p)
        else:
            self._reply(w, zk.CMD_ACK_UNKNOWN, session, p)
        return session

    def _send_data(self, w: asyncio.StreamWriter, session: int, p: zk.ZkPacket,
                   block: bytes) -> None:
        self._reply(w, zk.CMD_PREPARE_DATA, session, p, struct.pack("<I", len(block)))
        for off in range(0, len(block), CHUNK):
            self._reply(w, zk.CMD_DATA, session, p, block[off:off + CHUNK])
        self._reply(w, zk.CMD_ACK_OK, session, p)
