"""A simulated ZKTeco attendance terminal: TCP on loopback, speaking drivers.protocols.zk.

It keeps users (names stored in GBK, as Chinese firmware does) and every punch in its own
memory, like the real terminal's flash, and pushes live punches to clients that registered for
EF_ATTLOG. Tests and `hallbox run --sim` drive it with `punch()`; `unplug()` drops every client
and stops listening (the terminal left the LAN), `replug()` listens again on the same port.
`silent = True` makes it swallow requests without answering (a hung terminal).

It answers what a standard client asks a real terminal (the replies as the published captures
of a ZKTeco F19 show them, zk-protocol sections/terminal.md and ex_data.md): CMD_GET_VERSION,
CMD_OPTIONS_RRQ/WRQ ("~SerialNumber=…\0"; CMD_ACK_ERROR for an option the terminal lacks),
CMD_GET_FREE_SIZES (the 92-byte counters), CMD_STATE_RRQ, CMD_DISABLEDEVICE/ENABLEDEVICE,
CMD_CANCELCAPTURE/STARTVERIFY (a disabled or non-verifying terminal takes no punch),
CMD_GET_TIME/SET_TIME, CMD_CLEAR_ATTLOG, the buffered read (CMD_PREPARE_BUFFER, CMD_READ_BUFFER
chunks, CMD_FREE_DATA) and the older direct CMD_USERTEMP_RRQ/CMD_ATTLOG_RRQ transfer.
tests/test_zk_interop.py runs the independent client pyzk against it.
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
CHUNK = 1024  # bytes of DATA per CMD_DATA packet in the direct transfer, as small terminals send
INLINE = 1024  # a buffered read of at most this many bytes comes back inline in one CMD_DATA
FIRMWARE = "Ver 6.60 Nov 13 2019"
FP_CAPACITY, USER_CAPACITY, ATTLOG_CAPACITY = 3000, 3000, 100_000
STATE_WAITING, STATE_IDENTIFYING = 0, 2  # CMD_STATE_RRQ codes (sections/terminal.md)


def default_options(host: str) -> dict[str, str]:
    """What an F18-class fingerprint terminal reports for CMD_OPTIONS_RRQ; ~ names are read-only."""
    return {
        "~SerialNumber": "BJ2C194960123", "~Platform": "ZEM560", "~DeviceName": "F18",
        "~OEMVendor": "ZKTeco Inc.", "~ProductTime": "2019-11-13 10:15:02",
        "MAC": "00:17:61:c8:3a:12", "~ZKFPVersion": "10", "~OS": "1", "~ExtendFmt": "0",
        "~UserExtFmt": "0", "FaceFunOn": "0", "~PIN2Width": "9", "~IsOnlyRFMachine": "0",
        "~RFCardOn": "0", "WorkCode": "0", "IPAddress": host, "NetMask": "255.255.255.0",
        "GATEIPAddress": "0.0.0.0", "DeviceID": "1", "LockOn": "10",
    }


class _Conn:
    """One client's session: its id and the data set it prepared in the terminal's buffer."""

    def __init__(self) -> None:
        self.session: int | None = None
        self.buffer: bytes | None = None


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
        self.options = default_options(host)
        self.firmware = FIRMWARE
        self.enabled = True
        self.verifying = True
        self.clock_offset = 0.0  # seconds CMD_SET_TIME moved the terminal's clock
        self.unanswered: list[int] = []  # commands answered with CMD_ACK_UNKNOWN

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

    def now(self) -> datetime:
        return datetime.fromtimestamp(datetime.now().timestamp() + self.clock_offset)

    def punch(self, user_id: str, when: datetime | None = None, punch: int = 0,
              status: int = 1) -> zk.ZkPunch:
        """A staff member presses a finger: stored, and pushed live to registered clients.

        A terminal a client disabled, or told to stop verifying, identifies nobody: RuntimeError.
        """
        if not (self.enabled and self.verifying):
            raise RuntimeError("the terminal is not verifying fingers (disabled or capture "
                               "cancelled by a client)")
        uid = next((u.uid for u in self.users if u.user_id == user_id), 0)
        p = zk.ZkPunch(user_id, (when or self.now()).replace(microsecond=0), status,
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
        conn = _Conn()
        dropped = 0
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                for p in dec.feed(chunk):
                    if self.silent:
                        continue
                    if not self._answer(p, conn, writer):
                        return
                self.bad_packets += dec.stats.dropped - dropped
                dropped = dec.stats.dropped
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

    def _answer(self, p: zk.ZkPacket, conn: _Conn, w: asyncio.StreamWriter) -> bool:
        """Answer one request; False once the client said CMD_EXIT."""
        if p.command == zk.CMD_CONNECT:
            conn.session = next(self._sessions) & 0xFFFF
            self.connects += 1
            self._reply(w, zk.CMD_ACK_OK, conn.session, p)
            return True
        session = conn.session
        if session is None or p.session != session:
            self._reply(w, zk.CMD_ACK_UNAUTH, p.session, p)
            return True
        ok = zk.CMD_ACK_OK
        cmd = p.command
        if cmd == zk.CMD_EXIT:
            self._reply(w, ok, session, p)
            w.close()
            return False
        if cmd == zk.CMD_ACK_OK:
            return True  # the client's ack of a live event needs no answer
        if cmd == zk.CMD_GET_TIME:
            self._reply(w, ok, session, p, struct.pack("<I", zk.encode_time(self.now())))
        elif cmd == zk.CMD_SET_TIME and len(p.data) >= 4:
            try:
                t = zk.decode_time(struct.unpack_from("<I", p.data)[0])
            except ValueError:
                self._reply(w, zk.CMD_ACK_ERROR, session, p)
            else:
                self.clock_offset = t.timestamp() - datetime.now().timestamp()
                self._reply(w, ok, session, p)
        elif cmd == zk.CMD_GET_VERSION:
            self._reply(w, ok, session, p, self.firmware.encode() + b"\0")
        elif cmd == zk.CMD_OPTIONS_RRQ:
            name = p.data.split(b"\0", 1)[0].decode("ascii", "replace")
            if name in self.options:
                self._reply(w, ok, session, p, f"{name}={self.options[name]}".encode() + b"\0")
            else:
                self._reply(w, zk.CMD_ACK_ERROR, session, p)
        elif cmd == zk.CMD_OPTIONS_WRQ:
            name, eq, value = p.data.split(b"\0", 1)[0].decode("ascii", "replace").partition("=")
            if not eq or not name or name.startswith("~"):
                self._reply(w, zk.CMD_ACK_ERROR, session, p)
            else:
                self.options[name] = value
                self._reply(w, ok, session, p)
        elif cmd == zk.CMD_GET_FREE_SIZES:
            self._reply(w, ok, session, p, self._sizes())
        elif cmd == zk.CMD_STATE_RRQ:
            # The state travels in the session field of the reply (sections/terminal.md).
            state = STATE_IDENTIFYING if self.verifying else STATE_WAITING
            self._reply(w, ok, state, p)
        elif cmd in (zk.CMD_ENABLEDEVICE, zk.CMD_DISABLEDEVICE):
            self.enabled = cmd == zk.CMD_ENABLEDEVICE
            self._reply(w, ok, session, p)
        elif cmd in (zk.CMD_STARTVERIFY, zk.CMD_CANCELCAPTURE):
            self.verifying = cmd == zk.CMD_STARTVERIFY
            self._reply(w, ok, session, p)
        elif cmd in (zk.CMD_REFRESHDATA, zk.CMD_REFRESHOPTION):
            self._reply(w, ok, session, p)
        elif cmd == zk.CMD_CLEAR_ATTLOG:
            self.records.clear()
            self._reply(w, ok, session, p)
        elif cmd == zk.CMD_USERTEMP_RRQ:
            self._send_direct(w, session, p, zk.pack_users(self.users, self.encoding))
        elif cmd == zk.CMD_ATTLOG_RRQ:
            self._send_direct(w, session, p, self._attlog())
        elif cmd == zk.CMD_PREPARE_BUFFER:
            self._prepare_buffer(w, conn, p)
        elif cmd == zk.CMD_READ_BUFFER:
            self._read_buffer(w, conn, p)
        elif cmd == zk.CMD_FREE_DATA:
            conn.buffer = None
            self._reply(w, ok, session, p)
        elif cmd == zk.CMD_REG_EVENT:
            if len(p.data) >= 4 and struct.unpack_from("<I", p.data)[0] & zk.EF_ATTLOG:
                self._live.add(w)
            else:
                self._live.discard(w)
            self._reply(w, ok, session, p)
        else:
            self.unanswered.append(cmd)
            self._reply(w, zk.CMD_ACK_UNKNOWN, session, p)
        return True

    def _sizes(self) -> bytes:
        """The 92-byte CMD_GET_FREE_SIZES answer: i32 counters at the manual's offsets."""
        f = [0] * 23
        f[4] = len(self.users)
        f[6] = 0  # fingerprint templates: this terminal's users enrolled none through us
        f[8] = len(self.records)
        f[12] = sum(1 for u in self.users if u.privilege)
        f[13] = sum(1 for u in self.users if u.password)
        f[14], f[15], f[16] = FP_CAPACITY, USER_CAPACITY, ATTLOG_CAPACITY
        f[17] = FP_CAPACITY - f[6]
        f[18] = USER_CAPACITY - len(self.users)
        f[19] = ATTLOG_CAPACITY - len(self.records)
        return struct.pack("<23i", *f)

    def _attlog(self) -> bytes:
        block = zk.pack_attlog(self.records)
        if self.during_pull is not None:
            self.during_pull()
        return block

    def _dataset(self, command: int, fct: int) -> bytes | None:
        if command == zk.CMD_USERTEMP_RRQ and fct == zk.FCT_USER:
            return zk.pack_users(self.users, self.encoding)
        if command == zk.CMD_ATTLOG_RRQ:
            return self._attlog()
        return None

    def _prepare_buffer(self, w: asyncio.StreamWriter, conn: _Conn, p: zk.ZkPacket) -> None:
        session = conn.session or 0
        if len(p.data) < 11:
            self._reply(w, zk.CMD_ACK_ERROR, session, p)
            return
        _, command, fct, _ = struct.unpack_from("<bhii", p.data)
        block = self._dataset(command, fct)
        if block is None:
            self._reply(w, zk.CMD_ACK_ERROR, session, p)
        elif len(block) <= INLINE:
            self._reply(w, zk.CMD_DATA, session, p, block)
        else:
            conn.buffer = block
            # u8 0, the size twice, then 4 bytes the manual could not name (ex_data.md); 0 here.
            self._reply(w, zk.CMD_ACK_OK, session, p,
                        struct.pack("<BIII", 0, len(block), len(block), 0))

    def _read_buffer(self, w: asyncio.StreamWriter, conn: _Conn, p: zk.ZkPacket) -> None:
        session = conn.session or 0
        if conn.buffer is None or len(p.data) < 8:
            self._reply(w, zk.CMD_ACK_ERROR, session, p)
            return
        start, size = struct.unpack_from("<ii", p.data)
        if start < 0 or size <= 0 or start + size > len(conn.buffer):
            self._reply(w, zk.CMD_ACK_ERROR_DATA, session, p)
            return
        chunk = conn.buffer[start:start + size]
        # PREPARE_DATA(size, 0x10), the chunk, ACK_OK, all under the request's reply number.
        self._reply(w, zk.CMD_PREPARE_DATA, session, p, struct.pack("<II", size, 0x10))
        step = zk.MAX_PACKET - zk.HEADER
        for off in range(0, len(chunk), step):
            self._reply(w, zk.CMD_DATA, session, p, chunk[off:off + step])
        self._reply(w, zk.CMD_ACK_OK, session, p)

    def _send_direct(self, w: asyncio.StreamWriter, session: int, p: zk.ZkPacket,
                     block: bytes) -> None:
        """The older unbuffered transfer: PREPARE_DATA(size), 1 KiB DATA packets, ACK_OK."""
        self._reply(w, zk.CMD_PREPARE_DATA, session, p, struct.pack("<II", len(block), 0x10))
        for off in range(0, len(block), CHUNK):
            self._reply(w, zk.CMD_DATA, session, p, block[off:off + CHUNK])
        self._reply(w, zk.CMD_ACK_OK, session, p)
