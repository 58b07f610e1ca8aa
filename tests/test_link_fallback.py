"""MQTT 5 -> 3.1.1 fallback against a broker that only speaks 3.1.1.

Mosquitto 2.0 cannot be told to refuse MQTT 5, so a small TCP front answers an MQTT 5 CONNECT
the way a 3.1.1-only broker does (CONNACK return code 1, "unacceptable protocol version",
then close) and passes any other connection through to the real Mosquitto byte for byte.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from edge.link.sender import Link
from edge.runtime import HallRuntime
from tests.link_fixtures import (
    Broker,
    await_for,
    box_config,
    box_password,
    broker,
    pki,
)

__all__ = ["broker", "pki"]


class Only311Front:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.refused_v5 = 0
        self.passed = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_packet(c: socket.socket) -> bytes:
        head = c.recv(1)
        length, mult, raw = 0, 1, b""
        while True:  # MQTT variable-length "remaining length"
            b = c.recv(1)
            raw += b
            length += (b[0] & 0x7F) * mult
            mult *= 128
            if not b[0] & 0x80:
                break
        body = b""
        while len(body) < length:
            body += c.recv(length - len(body))
        return head + raw + body

    def _serve(self, c: socket.socket) -> None:
        pkt = self._read_packet(c)
        # CONNECT: fixed header, remaining length, then protocol name (2-byte len + "MQTT")
        i = 1
        while pkt[i] & 0x80:
            i += 1
        level = pkt[i + 1 + 6]
        if level == 5:
            self.refused_v5 += 1
            c.sendall(bytes([0x20, 0x02, 0x00, 0x01]))  # 3.1.1 CONNACK: bad protocol version
            c.close()
            return
        self.passed += 1
        up = socket.create_connection(("127.0.0.1", self.upstream))
        up.sendall(pkt)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(c, up), daemon=True).start()
        pipe(up, c)

    def close(self) -> None:
        self.sock.close()


def test_falls_back_to_mqtt311(tmp_path: Path, broker: Broker):
    front = Only311Front(broker.port)
    url = f"mqtt://box-1:{box_password('box-1')}@127.0.0.1:{front.port}"
    cfg = box_config("box-1", url)  # protocol = "auto"
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link.connected, 15, "connected after falling back")
        assert link.conn is not None and link.conn.protocol == "3.1.1"
        rt.execute(lambda h: h.issue("SHMS"))
        await await_for(lambda: rt.store.outbox_pending() == 0, 10, "sent over 3.1.1")
        await link.stop()

    try:
        asyncio.run(main())
    finally:
        front.close()
        rt.close()
    assert front.refused_v5 >= 1 and front.passed >= 1
