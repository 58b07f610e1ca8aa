"""The MQTT transport behind a small interface, over paho-mqtt 2.x (CallbackAPIVersion.VERSION2).

One `PahoConnection` is one connection attempt and is thrown away when the link drops, so
paho's in-memory queue never outlives a connection: the outbox in SQLite is the only durable
store, and what was in flight at a disconnect is simply unsent again.

paho runs on the asyncio loop itself, not on a network thread of its own (paho's external-loop
interface: the socket's reader and writer on the loop, `loop_misc` for keepalive once a
second). Every callback, PUBACKs included, therefore arrives on the loop thread where all
decisions are made. With a network thread, each PUBACK was a `call_soon_threadsafe` (a write to
the loop's self-pipe) and each publish a write to paho's own wake-up socket, and the three
threads (loop, paho, the store's writer) passed the GIL back and forth per message on a
2-core box. Only the blocking TCP/TLS connect runs in a worker thread.

Incoming bytes are read in one `recv` per readable socket, not paho's three per packet (command
byte, length byte, body): `_BufferedClient` serves paho's small reads from that buffer.

Why a subclass that touches paho's internals (`_sock_recv`, `_packet_read`,
`_handle_pubackcomp`, its out-message table): per PUBACK, paho made three system calls, two
new reason/property objects and a scan of every message in flight, and a
`threading.Condition` per publish; at the outbox's rates that was most of the link's cost
(the live figure was 0.4 x a bare paho loop, now about 0.8). Only successful PUBACKs and our
own QoS 1 publishes take the short path; everything else is paho's code. paho is pinned in
pyproject.toml to the release these overrides were written and tested against; an upgrade
must pass tests/test_link_*.py first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.mqtt import MqttSection

log = logging.getLogger(__name__)
ProtocolName = Literal["5", "3.1.1"]
# CONNACK codes meaning "this broker does not speak that protocol version".
_UNSUPPORTED_PROTOCOL = {0x84, 1}


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None


class LinkListener(Protocol):
    """What a connection reports, always on the loop thread."""

    def on_puback(self, conn: PahoConnection, mid: int, ok: bool, reason: str) -> None: ...

    def on_lost(self, conn: PahoConnection, reason: str) -> None: ...

    def on_message(self, conn: PahoConnection, msg: Incoming) -> None: ...


class ConnectFailed(Exception):
    def __init__(self, detail: str, *, protocol_refused: bool = False,
                 auth: bool = False) -> None:
        super().__init__(detail)
        self.protocol_refused = protocol_refused
        self.auth = auth


# A successful PUBACK for every message: shared reason and property objects instead of two
# new ones per message (a ReasonCode copies its table of all reason names when made).
# Listeners only read them. Success is 0x00, or 0x10 "no matching subscribers" (MQTT 5).
_PUBACK_OK = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0x00, 0x10)}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


class _Unwaited(paho.MQTTMessageInfo):
    """The info of an event message: nobody waits on it (its PUBACK arrives in on_publish), so
    it has no threading.Condition (one per message was a third of paho's publish)."""

    __slots__ = ()

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self._published = False
        self.rc = paho.MQTT_ERR_SUCCESS
        self._iterpos = 0

    def _set_as_published(self) -> None:
        self._published = True

    def is_published(self) -> bool:
        return self._published

    def wait_for_publish(self, timeout: float | None = None) -> None:
        raise RuntimeError("an event's PUBACK is reported to the listener, not waited for")


class _BufferedClient(paho.Client):
    """paho with the hot spots of the event path cut (a PUBACK cost more than its PUBLISH):
    reads served from one large `recv` (a PUBACK was three system calls), successful PUBACKs
    without properties taken straight from that buffer without new objects, and
    `publish_qos1` for events. Anything else (a refusal, a PUBACK with properties, every other
    packet) is paho's own code."""

    _rbuf = b""
    _rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)
            if not data:
                return data  # closed by the peer: paho sees b"" as before
            self._rbuf, self._rpos = data, 0
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def _packet_read(self) -> paho.MQTTErrorCode:
        # Whole successful PUBACKs waiting in the buffer are handled here, in a row; anything
        # else, or a packet split across reads, goes through paho's own reader.
        if self._in_packet["command"] == 0:
            buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
            start = pos
            v5 = self._protocol == paho.MQTTv5
            while pos + 4 <= end and buf[pos] == 0x40:  # PUBACK
                size = buf[pos + 1]
                if size == 2:
                    reason = _PUBACK_OK[0]
                elif v5 and size == 3 and pos + 5 <= end:
                    reason = _PUBACK_OK.get(buf[pos + 4])
                elif v5 and size == 4 and pos + 6 <= end and buf[pos + 5] == 0:
                    reason = _PUBACK_OK.get(buf[pos + 4])
                else:
                    break
                if reason is None:
                    break  # a refusal: paho's reader reports it
                mid = (buf[pos + 2] << 8) | buf[pos + 3]
                pos += 2 + size
                self._rpos = pos
                with self._out_message_mutex:
                    if mid in self._out_messages:
                        rc = self._do_on_publish(mid, reason, _NO_PROPERTIES)
                        if rc != paho.MQTT_ERR_SUCCESS:
                            return rc
            if pos != start:
                with self._msgtime_mutex:
                    self._last_bytes_received = paho.time_func()
                return paho.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _handle_pubackcomp(self, cmd: Any) -> paho.MQTTErrorCode:
        # Packet id alone (success), or with a success reason and no properties.
        packet = self._in_packet["packet"]
        size = len(packet)
        if (cmd != "PUBACK" or not 2 <= size <= 4 or (size == 4 and packet[3])
                or (size > 2 and self._protocol != paho.MQTTv5)):
            return super()._handle_pubackcomp(cmd)
        reason = _PUBACK_OK.get(packet[2] if size > 2 else 0)
        if reason is None:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)
        return paho.MQTT_ERR_SUCCESS

    def publish_qos1(self, topic: bytes, payload: bytes) -> int | None:
        """paho's publish() for one QoS 1 message, no retain, no properties, topic checked by
        the caller, with paho's in-flight limit off (the link keeps the window): the same
        bookkeeping (`_out_messages`, the in-flight count, `_send_publish`) without the
        per-message Condition. The mid, or None if paho refused (then: not sent)."""
        mid = self._mid_generate()
        msg = paho.MQTTMessage.__new__(paho.MQTTMessage)
        msg.timestamp = paho.time_func()
        msg.mid, msg._topic, msg.payload = mid, topic, payload
        msg.qos, msg.retain, msg.dup, msg.properties = 1, False, False, None
        msg.info = info = _Unwaited(mid)
        with self._out_message_mutex:
            if ((0 < self._max_queued_messages <= len(self._out_messages))
                    or mid in self._out_messages):
                return None
            self._out_messages[mid] = msg
            self._inflight_messages += 1
            msg.state = paho.mqtt_ms_wait_for_puback
            rc = self._send_publish(mid, topic, payload, 1, False, False, info, None)
            if rc == paho.MQTT_ERR_NO_CONN:
                self._inflight_messages -= 1
                msg.state = paho.mqtt_ms_publish
            info.rc = rc
        return mid if rc == paho.MQTT_ERR_SUCCESS else None

    def buffered(self) -> bool:
        """Bytes already read that paho has not taken yet (the socket may not be readable)."""
        return self._rpos < len(self._rbuf)


class PahoConnection:
    def __init__(self, cfg: MqttSection, *, client_id: str, protocol: ProtocolName,
                 will: tuple[str, bytes] | None, listener: LinkListener,
                 loop: asyncio.AbstractEventLoop, inflight: int,
                 manual_ack: bool = False) -> None:
        self.cfg = cfg
        self.protocol = protocol
        self.listener = listener
        self.loop = loop
        self.session_present = False
        self.closed = False
        v5 = protocol == "5"
        self.client = _BufferedClient(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            clean_session=None if v5 else False,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            reconnect_on_failure=False, manual_ack=manual_ack)
        # The link keeps the window; paho refuses more than `inflight` messages outstanding
        # (its queue limit). No in-flight limit of paho's own: with one set, paho scans every
        # outstanding message on each PUBACK for one to release (O(window) per message).
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(inflight)
        addr = cfg.broker()
        if addr.username:
            self.client.username_pw_set(addr.username, addr.password)
        if addr.tls:
            self.client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file,
                                keyfile=cfg.key_file, cert_reqs=ssl.CERT_REQUIRED,
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self._connack: asyncio.Future[tuple[bool, str, int]] = loop.create_future()
        # A connection that drops after open() gave up (the connect itself failed) is no error
        # to log: its outcome counts as read.
        self._connack.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self._sock: Any = None  # the socket the loop watches, once connected
        self._misc: asyncio.TimerHandle | None = None
        self._loop_thread = 0  # the loop's thread, once attached

    # ---- paho callbacks ----------------------------------------------------------------------
    # Connection changes are queued (thread-safe: the connect runs in a worker thread), so the
    # listener never runs inside paho's read or close; PUBACKs and commands go straight on.
    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, _c: paho.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        self._call(self._connack_done, bool(getattr(flags, "session_present", False)),
                   str(rc), int(rc.value) if hasattr(rc, "value") else int(rc),
                   bool(getattr(rc, "is_failure", False)))

    def _connack_done(self, present: bool, text: str, code: int, failed: bool) -> None:
        if not self._connack.done():
            self._connack.set_result((present and not failed, text, code if failed else 0))

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._call(self._lost, f"disconnected: {rc}")

    def _lost(self, reason: str) -> None:
        if not self._connack.done():
            self._connack.set_exception(ConnectFailed(reason))
            return
        if not self.closed:
            self.closed = True
            self.listener.on_lost(self, reason)

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        # On the loop thread (inside loop_read): straight to the listener.
        if not self.closed:
            ok = not rc.is_failure if hasattr(rc, "is_failure") else True
            self.listener.on_puback(self, mid, ok, str(rc) if not ok else "Success")

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        props = getattr(m, "properties", None)
        rt = getattr(props, "ResponseTopic", None) if props else None
        cd = getattr(props, "CorrelationData", None) if props else None
        msg = Incoming(m.topic, bytes(m.payload), rt, bytes(cd) if cd is not None else None)
        self._message(msg)

    def _message(self, msg: Incoming) -> None:
        if not self.closed:
            self.listener.on_message(self, msg)

    # ---- paho driven by the loop ----------------------------------------------------------
    def _attach(self) -> None:
        """Watch the connected socket on the loop; from now on paho asks us to write."""
        sock = self.client.socket()
        if sock is None:
            raise ConnectFailed("the connection closed while opening")
        self._sock = sock
        self._loop_thread = threading.get_ident()
        self.client.on_socket_register_write = self._want_write
        self.client.on_socket_unregister_write = self._done_writing
        self.client.on_socket_close = self._socket_closed
        self.loop.add_reader(sock, self._readable)
        if self.client.want_write():
            self._want_write(self.client, None, sock)
        self._misc = self.loop.call_later(1.0, self._keepalive)

    def _readable(self) -> None:
        client = self.client
        client.loop_read()
        # loop_read stops after as many packets as are in flight; what is left in our buffer
        # (or decrypted and waiting inside a TLS socket) would not make the socket readable
        # again.
        while (sock := client.socket()) is not None and (
                client.buffered() or (hasattr(sock, "pending") and sock.pending() > 0)):
            client.loop_read()

    def _want_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            self.loop.add_writer(sock, self.client.loop_write)
        else:  # a publish from another thread (a runtime with no loop attached)
            self._call(self.loop.add_writer, sock, self.client.loop_write)

    def _done_writing(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _socket_closed(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._detach(sock)

    def _detach(self, sock: Any) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if sock is not None and self._sock is sock:
            self._sock = None
            with contextlib.suppress(Exception):
                self.loop.remove_reader(sock)
                self.loop.remove_writer(sock)

    def _keepalive(self) -> None:
        # PINGREQ when due, and a broker that stopped answering is a lost connection.
        self._misc = None
        if self.client.loop_misc() == paho.MQTT_ERR_SUCCESS and self._sock is not None:
            self._misc = self.loop.call_later(1.0, self._keepalive)

    # ---- loop thread ---------------------------------------------------------------------
    async def open(self, timeout: float = 10.0) -> None:
        addr = self.cfg.broker()
        kw: dict[str, Any] = {}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            kw = {"clean_start": False, "properties": props}
        try:
            await asyncio.wait_for(asyncio.to_thread(
                self.client.connect, addr.host, addr.port, self.cfg.keepalive_s, **kw),
                timeout)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            raise ConnectFailed(f"cannot reach {addr.host}:{addr.port}: {e}") from None
        self._attach()
        try:
            present, text, code = await asyncio.wait_for(self._connack, timeout)
        except TimeoutError:
            await self.close(send_disconnect=False)
            raise ConnectFailed("no CONNACK from the broker") from None
        except ConnectFailed as e:
            await self.close(send_disconnect=False)
            # A broker that drops an MQTT 5 CONNECT without answering may only speak 3.1.1.
            raise ConnectFailed(str(e), protocol_refused=self.protocol == "5") from None
        if code:
            await self.close(send_disconnect=False)
            raise ConnectFailed(f"broker refused the connection: {text}",
                                protocol_refused=code in _UNSUPPORTED_PROTOCOL,
                                auth=code in (4, 5, 0x86, 0x87))
        self.session_present = present

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                correlation: bytes | None = None) -> int | None:
        """Hand one message to paho; its mid, or None if paho refused it (then: not sent)."""
        props = None
        if correlation is not None and self.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    def publish_event(self, topic: bytes, payload: bytes) -> int | None:
        """One event at QoS 1 on a topic from `event_topic`; its mid, or None if refused."""
        return self.client.publish_qos1(topic, payload)

    @staticmethod
    def event_topic(topic: str) -> bytes:
        """An event topic, checked once (no wildcards) and encoded for `publish_event`."""
        raw = topic.encode("utf-8")
        paho.Client._raise_for_invalid_topic(raw)
        return raw

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)

    async def close(self, *, send_disconnect: bool = True) -> None:
        self.closed = True
        if send_disconnect:
            with contextlib.suppress(Exception):
                self.client.disconnect()
                self.client.loop_write()  # the DISCONNECT goes out now; paho then closes
        sock = self.client.socket()
        self._detach(self._sock)
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()
