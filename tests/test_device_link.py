"""The shared Link on its own: a long outage (backoff at its cap) still recovers within 2 s."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.base import DeviceOffline, Endpoint, Link
from drivers.sim.pty_port import PtyPort


def test_long_outage_then_replug_recovers_and_reports_once(tmp_path: Path) -> None:
    async def go() -> None:
        got: list[bytes] = []
        port = PtyPort(tmp_path, "dev1", got.append)
        downs: list[str] = []
        ups: list[int] = []
        link = Link("dev1", str(tmp_path / "dev1"), on_up=lambda: ups.append(1),
                    on_down=downs.append)
        await link.start()  # nothing plugged yet: one down report, then quiet retries
        await asyncio.sleep(1.5)
        assert not link.online and len(downs) == 1 and "cannot open" in downs[0]
        with pytest.raises(DeviceOffline):
            link.send(b"x")
        port.plug()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await link.wait_online(2.0)
        assert loop.time() - t0 < 2.0
        link.send(b"hello")
        await link.drain()
        for _ in range(100):
            if b"".join(got) == b"hello":
                break
            await asyncio.sleep(0.01)
        assert b"".join(got) == b"hello"
        port.unplug()
        for _ in range(200):
            if not link.online:
                break
            await asyncio.sleep(0.01)
        assert not link.online and len(downs) == 2 and len(ups) == 1
        await link.stop()

    asyncio.run(go())


def test_endpoint_parsing() -> None:
    assert Endpoint.parse("/dev/serial/by-id/x").path == "/dev/serial/by-id/x"
    ep = Endpoint.parse("tcp://127.0.0.1:9100")
    assert (ep.host, ep.port) == ("127.0.0.1", 9100)
    assert str(Endpoint.parse("tcp://[::1]:9100")) == "tcp://::1:9100"
    for bad in ("COM3", "tcp://host", "ttyUSB0"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)
