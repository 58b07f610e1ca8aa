"""Central-side MQTT helpers: a connected paho client and `send_command` (used by the CLI and
by the ingest's gap filler)."""

from __future__ import annotations

import json
import queue
import ssl
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config.mqtt import MqttSection
from edge.link import protocol as P


@dataclass(frozen=True)
class CentralBroker:
    url: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def section(self) -> MqttSection:
        return MqttSection(url=self.url, ca_file=self.ca_file, cert_file=self.cert_file,
                           key_file=self.key_file)


def make_client(b: CentralBroker, client_id: str, *, protocol: str = "5",
                manual_ack: bool = False) -> paho.Client:
    v5 = protocol == "5"
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=None if v5 else True,
                    protocol=paho.MQTTv5 if v5 else paho.MQTTv311, manual_ack=manual_ack)
    addr = b.section().broker()
    if addr.username:
        c.username_pw_set(addr.username, addr.password)
    if addr.tls:
        c.tls_set(ca_certs=b.ca_file, certfile=b.cert_file, keyfile=b.key_file,
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.reconnect_delay_set(1, 10)
    return c


def connect_blocking(c: paho.Client, b: CentralBroker, *, clean_start: bool = True,
                     session_expiry: int = 0, timeout: float = 10.0) -> None:
    addr = b.section().broker()
    done = threading.Event()
    err: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            err.append(str(rc))
        done.set()

    c.on_connect = on_connect
    kw: dict[str, Any] = {}
    if c.protocol == paho.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        kw = {"clean_start": clean_start, "properties": props}
    c.connect(addr.host, addr.port, 30, **kw)
    c.loop_start()
    if not done.wait(timeout):
        c.loop_stop()
        raise TimeoutError(f"no CONNACK from {addr.host}:{addr.port}")
    if err:
        c.loop_stop()
        raise ConnectionRefusedError(f"broker refused: {err[0]}")


def send_command(b: CentralBroker, key: str, site: str, box: str, name: str,
                 args: dict[str, Any] | None = None, *, timeout: float = 10.0,
                 protocol: str = "5", ttl_s: int = 60,
                 payload: dict[str, Any] | bytes | None = None) -> dict[str, Any] | None:
    """Send one command, wait for its reply; None on timeout. `payload` overrides (tests)."""
    cmd = make_command_payload(key, site, box, name, args, ttl_s)
    if payload is not None and not isinstance(payload, bytes):
        cmd = payload
    cid = cmd.get("id") if isinstance(cmd.get("id"), str) else "unknown"
    reply_topic = P.topic_reply(site, box, cid if cid.replace("-", "").isalnum() else "unknown")
    c = make_client(b, f"cmd-{uuid.uuid4().hex[:12]}", protocol=protocol)
    replies: queue.Queue[dict[str, Any]] = queue.Queue()
    corr = cid.encode()

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        props = getattr(m, "properties", None)
        got = getattr(props, "CorrelationData", None) if props else None
        if protocol == "5" and got is not None and bytes(got) != corr:
            return
        try:
            replies.put(json.loads(m.payload))
        except ValueError:
            pass

    c.on_message = on_message
    connect_blocking(c, b)
    try:
        sub = threading.Event()
        c.on_subscribe = lambda *_a: sub.set()
        c.subscribe(reply_topic, qos=1)
        sub.wait(timeout)
        props = None
        if protocol == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_topic
            props.CorrelationData = corr
        body = payload if isinstance(payload, bytes) else json.dumps(cmd).encode()
        c.publish(P.topic_cmd(site, box, name), body, qos=1, properties=props).wait_for_publish(
            timeout)
        try:
            return replies.get(timeout=timeout)
        except queue.Empty:
            return None
    finally:
        c.disconnect()
        c.loop_stop()


def make_command_payload(key: str, site: str, box: str, name: str,
                         args: dict[str, Any] | None, ttl_s: int) -> dict[str, Any]:
    return P.make_command(key, site, box, name, args, ttl_s=ttl_s)
