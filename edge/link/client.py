"""The MQTT transport behind a small interface, over paho-mqtt 2.x (CallbackAPIVersion.VERSION2).

One `PahoConnection` is one connection attempt and is thrown away when the link drops, so
paho's in-memory queue never outlives a connection: the outbox in SQLite is the only durable
store, and what was in flight at a disconnect is simply unsent again. paho's network thread
only forwards callbacks to the asyncio loop (`call_soon_threadsafe`); all decisions are made
on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            clean_session=None if v5 else False,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            reconnect_on_failure=False, manual_ack=manual_ack)
        # We never hand paho more than the window, and paho refuses more than that.
        self.client.max_inflight_messages_set(inflight)
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
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # ---- paho thread -> loop -----------------------------------------------------------------
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
        ok = not getattr(rc, "is_failure", False)
        self._call(self._puback, mid, ok, str(rc))

    def _puback(self, mid: int, ok: bool, reason: str) -> None:
        if not self.closed:
            self.listener.on_puback(self, mid, ok, reason)

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        props = getattr(m, "properties", None)
        rt = getattr(props, "ResponseTopic", None) if props else None
        cd = getattr(props, "CorrelationData", None) if props else None
        msg = Incoming(m.topic, bytes(m.payload), rt, bytes(cd) if cd is not None else None)
        self._call(self._message, msg)

    def _message(self, msg: Incoming) -> None:
        if not self.closed:
            self.listener.on_message(self, msg)

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
        self.client.loop_start()
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

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)

    async def close(self, *, send_disconnect: bool = True) -> None:
        self.closed = True
        if send_disconnect:
            with contextlib.suppress(Exception):
                self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()
