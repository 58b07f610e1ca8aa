"""Broker-side security with a real Mosquitto: TLS with client certificates, passwords, ACL."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.central.client import CentralBroker, connect_blocking, make_client
from edge.domain.model import DomainEvent
from edge.link import protocol as P
from edge.link.sender import Link
from edge.runtime import HallRuntime
from tests.link_fixtures import (
    SITE,
    Broker,
    await_for,
    box_config,
    box_password,
    broker,
    pki,
)

__all__ = ["broker", "pki"]


def raw_client(b: Broker, user: str, password: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{user}",
                    protocol=paho.MQTTv5)
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    return c


def test_tls_with_client_certificate(tmp_path: Path, broker: Broker):
    cert, key = broker.pki.clients["box-1"]
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1"), tls=True),
                     ca_file=str(broker.pki.ca), cert_file=str(cert), key_file=str(key))
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link.connected, 10, "TLS connection")
        rt.emit([DomainEvent("display.message", {"command_id": "x", "text": "tls",
                                                 "seconds": 60, "target": "main"})])
        await await_for(lambda: rt.store.outbox_pending() == 0, 10, "sent over TLS")
        await link.stop()

    asyncio.run(main())
    rt.close()


def test_tls_without_client_certificate_is_refused(tmp_path: Path, broker: Broker):
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1"), tls=True),
                     ca_file=str(broker.pki.ca))
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link.stats["connects"] == 0 and link._last_error is not None,
                        10, "a failed attempt")
        await asyncio.sleep(0.5)
        assert not link.connected and link.stats["connects"] == 0
        await link.stop()

    asyncio.run(main())
    assert rt.store.outbox_pending() == rt.store.head_seq  # all still waiting
    rt.close()


def test_wrong_password_is_refused(tmp_path: Path, broker: Broker):
    cfg = box_config("box-1", broker.url("box-1", "wrong"))
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link._last_error == "broker refused the credentials", 10,
                        "credentials refused")
        await link.stop()

    asyncio.run(main())
    assert rt.health.current["mqtt-link"].detail == "broker refused the credentials"
    rt.close()


def test_acl_box_cannot_speak_for_another_box_or_read_its_commands(broker: Broker):
    central = make_client(CentralBroker(broker.central_url()), "central-watch")
    seen: list[str] = []
    central.on_message = lambda _c, _u, m: seen.append(m.topic)
    connect_blocking(central, CentralBroker(broker.central_url()))
    central.subscribe("hallbox/v1/#", qos=1)

    box1 = raw_client(broker, "box-1", box_password("box-1"))
    acks: dict[int, int] = {}
    done = threading.Event()

    def on_publish(_c, _u, mid, rc, _p):
        acks[mid] = rc.value
        done.set()

    box1.on_publish = on_publish
    subacks: list[list[int]] = []
    box1.on_subscribe = lambda _c, _u, _m, rcs, _p: subacks.append([r.value for r in rcs])
    got: list[str] = []
    box1.on_message = lambda _c, _u, m: got.append(m.topic)
    import time

    time.sleep(0.3)
    # Publishing under box-2's topics: refused with 0x87 (not authorised).
    for t in (P.topic_event(SITE, "box-2", "ticket.issued"), P.topic_status(SITE, "box-2"),
              P.topic_cmd(SITE, "box-2", "replay"), P.topic_cmd(SITE, "box-1", "replay")):
        done.clear()
        info = box1.publish(t, json.dumps({"forged": True}), qos=1)
        assert done.wait(5)
        assert acks[info.mid] == 0x87, t
    # Its own event topic is allowed.
    info = box1.publish(P.topic_event(SITE, "box-1", "ticket.issued"), b"{}", qos=1)
    info.wait_for_publish(5)
    assert acks[info.mid] == 0
    # Reading another box's commands: Mosquitto 2.0 grants the subscription but the ACL
    # filters every message on delivery (other brokers refuse the SUBACK with 0x87).
    box1.subscribe(f"hallbox/v1/{SITE}/box-2/cmd/#", qos=1)
    box1.subscribe(f"hallbox/v1/{SITE}/box-1/cmd/#", qos=1)
    deadline = time.monotonic() + 5
    while len(subacks) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert subacks[0] in ([0x87], [1]) and subacks[1] == [1]
    central.publish(P.topic_cmd(SITE, "box-2", "health.get"), b"{}", qos=1).wait_for_publish(5)
    central.publish(P.topic_cmd(SITE, "box-1", "health.get"), b"{}", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert got == [P.topic_cmd(SITE, "box-1", "health.get")]
    # The centre saw none of the forged messages.
    assert not [t for t in seen if "box-2" in t and "cmd" not in t]
    for c in (box1, central):
        c.disconnect()
        c.loop_stop()


@pytest.mark.parametrize("user", ["nobody", ""])
def test_anonymous_and_unknown_users_refused(broker: Broker, user: str):
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=paho.MQTTv5)
    if user:
        c.username_pw_set(user, "x")
    codes: list[int] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc.value)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    import time

    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.02)
    c.loop_stop()
    assert codes and codes[0] in (0x86, 0x87)
