"""The pages' test bench: a real box with simulated devices served on a loopback port (its own
event loop in a thread, so the test drives Chromium synchronously), and a Chromium that
records every request leaving the box and every console error."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drivers.sim.harness import MONDAY_0900, PLUGINS, SimHall, example_config, running_hall
from edge.clock import FakeClock

CHROMIUM = "/usr/bin/chromium"
HOST = "hall.test"  # resolved to 127.0.0.1 inside Chromium only: a non-secure LAN-like origin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PageBox:
    """`hallbox run --sim` as the devices tests build it, under uvicorn on a fixed port; stop
    and start again on the same data directory and port (a box restart)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.clock = FakeClock(MONDAY_0900)
        self.hall: SimHall | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> PageBox:
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True,
                                        name="page-box")
        self._thread.start()
        assert self._ready.wait(60), "the box did not start"
        if self._error:
            raise self._error
        return self

    async def _main(self) -> None:
        import uvicorn

        try:
            # Every device plugin `hallbox run --sim` loads, each with its simulator.
            async with running_hall(self.tmp_path, config=page_config(), clock=self.clock,
                                    plugins=PLUGINS) as hall:
                self.hall, self.loop = hall, asyncio.get_running_loop()
                self._stop = asyncio.Event()
                server = uvicorn.Server(uvicorn.Config(
                    hall.box.app, host="127.0.0.1", port=self.port, log_level="warning",
                    lifespan="off", timeout_graceful_shutdown=1))
                task = asyncio.create_task(server.serve())
                while not server.started:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.02)
                self._ready.set()
                await self._stop.wait()
                server.should_exit = True
                await task
        except BaseException as e:  # surfaced to the test thread by start()
            self._error = e
            self._ready.set()
            raise

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the box did not stop"
        self._thread = None
        self.hall = None

    def restart(self, downtime: float = 0.0) -> None:
        import time

        self.stop()
        time.sleep(downtime)
        self.clock = FakeClock(self.clock.now() + timedelta(minutes=1))
        self.start()

    def call(self, fn: Callable[[SimHall], Any]) -> Any:
        """Run fn(hall) on the box's loop thread (where every operation runs) and return."""
        assert self.loop is not None and self.hall is not None
        fut: Future[Any] = Future()
        hall = self.hall

        def run() -> None:
            try:
                fut.set_result(fn(hall))
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(30)

    def advance(self, **delta: float) -> None:
        self.call(lambda h: self.clock.advance(**delta))


def page_config() -> Any:
    """The example hall, answering the name its pages are opened at (as a hall lists its own
    names in [api] allowed_hosts) beside loopback for the tests' own calls."""
    cfg = example_config()
    api = cfg.api.model_copy(update={"allowed_hosts": [HOST, "127.0.0.1", "localhost"]})
    return cfg.model_copy(update={"api": api})


class Watch:
    """Everything a page does that it must not: requests leaving the box, console errors,
    uncaught exceptions. `tolerate()` allows expected console lines for a while (a refusal's
    4xx, connection errors while the box is down)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outside: list[str] = []
        self.errors: list[str] = []
        self._tolerated: list[re.Pattern[str]] = []

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or (url.hostname == HOST and url.port == self.port):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        if any(p.search(msg.text) for p in self._tolerated):
            return
        self.errors.append(f"console: {msg.text} @ {msg.location.get('url', '')}")

    @contextlib.contextmanager
    def tolerate(self, *patterns: str) -> Iterator[None]:
        compiled = [re.compile(p) for p in patterns]
        self._tolerated += compiled
        try:
            yield
        finally:
            for p in compiled:
                self._tolerated.remove(p)

    def check(self) -> None:
        assert not self.outside, f"requests left the box: {self.outside}"
        assert not self.errors, "\n".join(self.errors)


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
                 # as a hall board's browser is set up: it plays announcements unattended
                 "--autoplay-policy=no-user-gesture-required"]
