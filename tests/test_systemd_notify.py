"""sd_notify against a real AF_UNIX datagram socket: READY once the API serves, watchdog pings
only while the loop and every liveness check are alive, STOPPING on the way out."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge import systemd
from edge.watchdog import Liveness, Watchdog
from tests.ops_fixtures import BoxProcess, NotifySocket, hall_config_text


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    ns = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", str(ns.path))
    yield ns
    ns.close()


def test_notify_path_and_abstract_socket(notify_socket: NotifySocket,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert systemd.notify("READY=1\nSTATUS=hello")
    assert notify_socket.recv(2) == "READY=1\nSTATUS=hello"
    name = f"hallbox-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("WATCHDOG=1")
        assert s.recv(100) == b"WATCHDOG=1"
    # Socket gone (systemd restarted, test over): the box is not taken down by it.
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert systemd.notify("WATCHDOG=1") is False
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("WATCHDOG=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert systemd.watchdog_interval() is None


class LoopThread:
    """An event loop in its own thread running a watchdog, so the test can hang it."""

    def __init__(self, wd: Watchdog) -> None:
        self.loop = asyncio.new_event_loop()
        self.wd = wd
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.wd.run())
        self.loop.run_forever()

    def hang(self, release: threading.Event, hanging: threading.Event) -> None:
        def blocking() -> None:  # what a blocking call or a deadlock does to the loop
            hanging.set()
            release.wait(30)
        self.loop.call_soon_threadsafe(blocking)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_hung_loop_stops_the_pings_and_they_resume(notify_socket: NotifySocket) -> None:
    lt = LoopThread(Watchdog([], interval=0.02))
    try:
        notify_socket.wait_for("WATCHDOG=1", 5)
        release, hanging = threading.Event(), threading.Event()
        lt.hang(release, hanging)
        assert hanging.wait(5)
        notify_socket.drain()  # pings sent before the hang began
        # The loop is blocked: the pinging task cannot run, nothing arrives (systemd would
        # kill the box after WatchdogSec).
        assert notify_socket.recv(0.5) is None
        release.set()
        notify_socket.wait_for("WATCHDOG=1", 5)
    finally:
        lt.stop()


def test_dead_part_stops_the_pings_and_says_which(notify_socket: NotifySocket) -> None:
    writer_ok = threading.Event()
    writer_ok.set()
    wd = Watchdog([Liveness("store writer", writer_ok.is_set),
                   Liveness("device supervisor", lambda: True)], interval=0.02)
    lt = LoopThread(wd)
    try:
        notify_socket.wait_for("WATCHDOG=1", 5)
        writer_ok.clear()
        notify_socket.wait_for("STATUS=not alive: store writer", 5)
        # From here on no ping: only silence (or a STATUS) while the writer is dead.
        time.sleep(0.2)
        assert all("WATCHDOG=1" not in m for m in notify_socket.drain())
        writer_ok.set()
        notify_socket.wait_for("WATCHDOG=1", 5)
        assert any("STATUS=serving" in m for m in notify_socket.messages)
    finally:
        lt.stop()


def test_a_raising_check_counts_as_dead(notify_socket: NotifySocket) -> None:
    def broken() -> bool:
        raise RuntimeError("supervisor state unreadable")

    sent: list[str] = []
    wd = Watchdog([Liveness("supervisor", broken)], 1.0, notify=lambda m: sent.append(m) or True)
    assert wd.beat() is False
    assert sent == ["STATUS=not alive: supervisor"]


def test_box_process_ready_pings_hang_and_stop(tmp_path: Path,
                                               notify_socket: NotifySocket) -> None:
    cfg = tmp_path / "hall.toml"
    cfg.write_text(hall_config_text(), encoding="utf-8")
    box = BoxProcess(cfg, tmp_path / "data", env={
        "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "200000"})
    box.start(wait=False)
    try:
        ready = notify_socket.wait_for("READY=1", 60)
        assert "STATUS=serving" in ready
        # READY means the API answers: a request right now succeeds.
        assert httpx.get(f"{box.url}/healthz", timeout=5).status_code == 200
        notify_socket.wait_for("WATCHDOG=1", 10)
        # The whole process stopped (as a hung process looks from outside): no pings.
        assert box.proc is not None
        box.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        notify_socket.drain()
        assert notify_socket.recv(0.6) is None
        box.proc.send_signal(signal.SIGCONT)
        notify_socket.wait_for("WATCHDOG=1", 10)
        assert box.stop() == 0
        notify_socket.wait_for("STOPPING=1", 5)
    finally:
        box.stop()


def test_hung_writer_stops_the_pings(tmp_path: Path, notify_socket: NotifySocket) -> None:
    import sqlite3

    from edge.store import Store

    store = Store(tmp_path / "hallbox.db", site="t", box="b")
    # Another process holding the database's write lock: the writer's group cannot commit.
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    lt = LoopThread(Watchdog([Liveness("store writer",
                                       lambda: store.writer_responsive(0.3))], 0.02))
    try:
        notify_socket.wait_for("WATCHDOG=1", 5)  # idle writer: alive
        done = store.write(lambda db: db.execute(
            "INSERT INTO meta(key, value) VALUES ('probe', '1')"))
        notify_socket.wait_for("STATUS=not alive: store writer", 5)
        time.sleep(0.3)  # several watchdog rounds: none of them pings
        assert all("WATCHDOG=1" not in m for m in notify_socket.drain())
        assert not done.done()
        blocker.execute("COMMIT")  # the lock is released: the group commits, pings resume
        done.result(10)
        notify_socket.wait_for("WATCHDOG=1", 5)
    finally:
        lt.stop()
        blocker.close()
        store.close()


def test_liveness_of_the_assembled_box(tmp_path: Path) -> None:
    import tomllib

    from edge import service
    from edge.assembly import build_box
    from edge.config import parse_config

    cfg = parse_config(tomllib.loads(hall_config_text()))

    async def run() -> None:
        box = build_box(cfg, tmp_path / "data")
        box.components += service.backup_components(box.runtime)
        await box.start()
        try:
            checks = service.liveness_checks(box)
            names = [c.name for c in checks]
            assert names[0] == "store writer" and "supervisor backup" in names
            assert all(c.alive() for c in checks)
            # A supervisor whose task died: its check fails, so the pings would stop.
            sup = next(s for s in box.supervised if s.name == "backup")
            assert sup._task is not None
            sup._task.cancel()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not next(c for c in checks if c.name == "supervisor backup").alive()
        finally:
            await box.stop()
            box.close()
        assert not checks[0].alive()  # the writer thread is gone after close

    asyncio.run(run())
