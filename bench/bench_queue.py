"""Queue throughput: tickets issued and numbers called per second, with p50/p99 latency.

Four layers do the same work, measured in the same run:
- http: a real `hallbox run` subprocess on loopback, lean keep-alive HTTP/1.1 clients
  (`LeanClient`) with some concurrency (8 issuing; one per staffed window calling);
- runtime_concurrent: HallRuntime in this process under the SAME concurrency: as many asyncio
  tasks as HTTP clients, each `await rt.run(op)`; the store's writer commits what they queued
  together (group commit). This is "the runtime layer" the HTTP figure is compared with
  (`http_over_runtime.*`): the same work, the same durability, minus HTTP;
- runtime: the same runtime driven sequentially with `rt.execute` (one operation, one commit,
  one fsync at a time): the fsync-bound floor, kept for reference;
- domain: the bare `Hall` with a FakeClock (no HTTP, no SQLite): the baseline of every figure;
- http_floor: tickets only, against `bench.http_floor`, FastAPI and uvicorn as the box runs
  them with a route that validates the same body and does nothing else, with the same clients:
  what the HTTP stack alone costs on this machine.

`http_over_runtime.tickets_issued_per_s` is the core issue's target: HTTP with 8 clients
against the runtime layer as the bench measured it when the target was set (sequential
`rt.execute`, where HTTP stood at 0.25). Beside it, the same HTTP figure against
runtime_concurrent, and the floor against runtime_concurrent: when the floor alone is near
runtime_concurrent's rate, half of it is out of reach of any server on this stack that does
the box's work (identify the caller, bound the LAN, answer the ticket's place in the queue).

The work: TICKETS tickets spread evenly over the hall's services, then every window staffed
and each window looping call-next / start / finish until nothing is left for it. A "number
called" is one call-next that called a ticket; its start and finish are part of the loop, so
the calls/s figures are whole service cycles (3 operations) per second. Latency is per
call-next (per issue for tickets). Each phase stops early after PHASE_CAP_S.

The two concurrent layers first issue WARMUP tickets, untimed, the same way: the HTTP server is
a process started a moment before, and its first requests paid for first-use work (imports
done lazily, validators built, caches filled) that a box serving a hall all day does once. The
runtime layers run in this process after the domain has, so they start warm; the warm-up
tickets are called in the calling phase like the others.

Only loopback; the example hall config is used with its daily caps raised to the maximum.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import cycle
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.boxproc import cpu_s, serving
from edge.clock import FakeClock
from edge.config import HallConfig, load_config
from edge.domain.queue import Hall
from edge.runtime import HallRuntime

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "hall.example.toml"
KIOSK = {"authorization": "Bearer demo-kiosk-token"}
TICKETS = 700  # 100 per service of the example hall
WARMUP = 140  # 20 per service, before the timed tickets of the concurrent layers
ISSUE_CONCURRENCY = 8
PHASE_CAP_S = 8.0  # keeps the whole bench well under a minute on a busy machine
READY_TIMEOUT_S = 30.0


@dataclass
class Figure:
    count: int
    seconds: float
    latencies_s: list[float]
    concurrency: int

    def as_dict(self, layer: str, figure: str, unit: str) -> dict[str, Any]:
        lat = sorted(self.latencies_s)

        def pct(p: float) -> float | None:
            # Nearest rank: the smallest sample with at least p of all samples at or below it.
            return round(lat[max(0, math.ceil(p * len(lat)) - 1)] * 1000, 3) if lat else None

        return {"layer": layer, "figure": figure,
                "value": round(self.count / self.seconds, 1) if self.seconds > 0 else None,
                "unit": unit, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "n": self.count,
                "concurrency": self.concurrency}


def bench_config(tmp: Path) -> Path:
    text, n = re.subn(r"(?m)^daily_cap = \d+$", "daily_cap = 999",
                      EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    if n == 0:
        raise RuntimeError("no daily_cap in the example config to raise")
    path = tmp / "hall.toml"
    path.write_text(text, encoding="utf-8")
    return path


def staff_pins(cfg: HallConfig) -> Iterator[tuple[str, str, int]]:
    """Demo staff S001..S014 at windows 1..14; the demo PIN is "8" + the id's digits."""
    windows = sorted(w.number for w in cfg.windows)
    for staff, window in zip(sorted(s.id for s in cfg.staff), windows, strict=False):
        yield staff, "8" + staff[1:], window


# ---- bare domain and runtime: the same loop, two ways to run an operation -----------------
Run = Callable[[Callable[[Hall], tuple[Any, list[Any]]]], Any]


def _drive(cfg: HallConfig, run: Run, tick: Callable[[], None]) -> tuple[Figure, Figure]:
    services = [s.code for s in cfg.services]
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(TICKETS):
        if time.perf_counter() - t0 > PHASE_CAP_S:
            break
        svc = services[i % len(services)]
        s = time.perf_counter()
        run(lambda h, svc=svc: h.issue(svc))
        lat.append(time.perf_counter() - s)
        tick()
    issued = Figure(len(lat), time.perf_counter() - t0, lat, 1)

    windows = []
    for staff, _pin, window in staff_pins(cfg):
        run(lambda h, staff=staff, window=window: (None, h.login(staff, window)))
        windows.append(window)
    lat = []
    t0 = time.perf_counter()
    active = list(windows)
    while active and time.perf_counter() - t0 < PHASE_CAP_S:
        for w in list(active):
            s = time.perf_counter()
            t = run(lambda h, w=w: h.call_next(w))
            if t is None:
                active.remove(w)
                continue
            lat.append(time.perf_counter() - s)
            tick()
            run(lambda h, w=w: (None, h.start(w)))
            tick()
            run(lambda h, w=w: (None, h.finish(w)))
            tick()
    called = Figure(len(lat), time.perf_counter() - t0, lat, 1)
    return issued, called


def bench_domain(cfg: HallConfig) -> tuple[Figure, Figure]:
    clock = FakeClock(datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo(cfg.hall.timezone)))
    hall = Hall(cfg, clock, ignore_hours=True)
    hall.open_day_if_needed()

    def run(op: Callable[[Hall], tuple[Any, list[Any]]]) -> Any:
        result, _events = op(hall)
        hall.dirty.clear()  # what the runtime does after persisting
        return result

    return _drive(cfg, run, lambda: clock.advance(0.1))


def bench_runtime(cfg: HallConfig, data: Path) -> tuple[Figure, Figure]:
    rt = HallRuntime.open(cfg, data, ignore_hours=True)
    try:
        rt.tick()
        return _drive(cfg, rt.execute, lambda: None)
    finally:
        rt.close()


# ---- the runtime under the HTTP bench's concurrency (group commit) -------------------------
async def _runtime_concurrent(cfg: HallConfig, rt: HallRuntime) -> tuple[Figure, Figure]:
    """The same work as `_http`, same concurrency, with `await rt.run(op)` instead of HTTP."""
    rt.attach(asyncio.get_running_loop())
    services = cycle([s.code for s in cfg.services])
    remaining = 0
    lat: list[float] = []

    async def issuer(t0: float) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() - t0 < PHASE_CAP_S:
            remaining -= 1
            svc = next(services)
            s = time.perf_counter()
            await rt.run(lambda h, svc=svc: h.issue(svc))
            lat.append(time.perf_counter() - s)

    for count in (WARMUP, TICKETS):
        remaining, lat = count, []
        t0 = time.perf_counter()
        await asyncio.gather(*(issuer(t0) for _ in range(ISSUE_CONCURRENCY)))
    issued = Figure(len(lat), time.perf_counter() - t0, lat, ISSUE_CONCURRENCY)

    staff = list(staff_pins(cfg))
    await asyncio.gather(*(rt.run(lambda h, s=s, w=w: (None, h.login(s, w)))
                           for s, _pin, w in staff))
    lat = []

    async def window(w: int, t0: float) -> None:
        while time.perf_counter() - t0 < PHASE_CAP_S:
            s = time.perf_counter()
            t = await rt.run(lambda h: h.call_next(w))
            e = time.perf_counter() - s
            if t is None:
                return
            lat.append(e)
            await rt.run(lambda h: (None, h.start(w)))
            await rt.run(lambda h: (None, h.finish(w)))

    t0 = time.perf_counter()
    await asyncio.gather(*(window(w, t0) for _s, _p, w in staff))
    called = Figure(len(lat), time.perf_counter() - t0, lat, len(staff))
    return issued, called


def bench_runtime_concurrent(cfg: HallConfig, data: Path) -> tuple[Figure, Figure]:
    rt = HallRuntime.open(cfg, data, ignore_hours=True)
    try:
        rt.tick()
        rt.store.flush()
        return asyncio.run(_runtime_concurrent(cfg, rt))
    finally:
        rt.close()


# ---- HTTP: a real server subprocess ---------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def hallbox_server(config: Path, data: Path) -> Iterator[tuple[str, int]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--data",
            str(data), "--ignore-hours", "--no-devices", "--host", "127.0.0.1", "--port",
            str(port)]
    with serving(args, url, data.parent / "server.log", "hallbox",
                 env={"HALLBOX_LOG": "WARNING"}, ready_timeout_s=READY_TIMEOUT_S,
                 stop_timeout_s=10) as proc:
        yield url, proc.pid


class LeanClient:
    """One keep-alive HTTP/1.1 connection that writes a request and reads its answer, nothing
    else. httpx spends more CPU per request than the box does to answer it (about 1.2–1.7 ms
    against 0.6–0.8 ms, measured on the 2-core machine), and the load generator shares the
    box's two cores: with httpx the figure measured the client. This one costs under 0.1 ms
    a request (printed with the figure as `client_cpu_ms_per_request`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode() if body is not None else b""
        head = [f"POST {path} HTTP/1.1", f"host: {self.host}:{self.port}",
                f"content-length: {len(data)}"]
        if body is not None:
            head.append("content-type: application/json")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        payload = await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, json.loads(payload) if payload else {}

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = self.reader = None


def _ok(answer: tuple[int, dict[str, Any]], what: str) -> dict[str, Any]:
    status, body = answer
    if status >= 300:
        raise RuntimeError(f"{what}: {status} {body}")
    return body


@dataclass
class HttpCost:
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    requests: int = 0


async def _http(cfg: HallConfig, url: str, pid: int, cost: HttpCost) -> tuple[Figure, Figure]:
    services = cycle([s.code for s in cfg.services])
    lat: list[float] = []
    host, port = url.removeprefix("http://").split(":")
    clients = [LeanClient(host, int(port)) for _ in range(max(ISSUE_CONCURRENCY, len(cfg.windows)))]
    try:
        await _issue(clients[:ISSUE_CONCURRENCY], services, WARMUP)
        server0, client0 = cpu_s(pid), time.process_time()
        issued = await _issue(clients[:ISSUE_CONCURRENCY], services, TICKETS)
        cost.server_cpu_s = cpu_s(pid) - server0
        cost.client_cpu_s = time.process_time() - client0
        cost.requests = issued.count

        staff = list(staff_pins(cfg))
        tokens = await asyncio.gather(*(
            c.post("/api/v1/sessions", {"staff_id": s, "pin": pin, "window": w})
            for c, (s, pin, w) in zip(clients, staff, strict=False)))
        auth = [{"authorization": f"Bearer {_ok(r, 'login')['token']}"} for r in tokens]
        lat = []

        async def window(c: LeanClient, w: int, headers: dict[str, str], t0: float) -> None:
            base = f"/api/v1/windows/{w}"
            while time.perf_counter() - t0 < PHASE_CAP_S:
                s = time.perf_counter()
                r = await c.post(f"{base}/call-next", None, headers)
                e = time.perf_counter() - s
                if _ok(r, "call-next")["called"] is None:
                    return
                lat.append(e)
                _ok(await c.post(f"{base}/start", None, headers), "start")
                _ok(await c.post(f"{base}/finish", None, headers), "finish")

        t0 = time.perf_counter()
        await asyncio.gather(*(window(c, w, h, t0)
                               for c, (_s, _p, w), h in zip(clients, staff, auth, strict=False)))
        called = Figure(len(lat), time.perf_counter() - t0, lat, len(staff))
    finally:
        for c in clients:
            await c.close()
    return issued, called


def bench_http(cfg: HallConfig, config: Path, data: Path, cost: HttpCost
               ) -> tuple[Figure, Figure]:
    with hallbox_server(config, data) as (url, pid):
        return asyncio.run(_http(cfg, url, pid, cost))


async def _issue(clients: list[LeanClient], services: Iterator[str], count: int) -> Figure:
    """`count` tickets taken by `clients` at once (as the hall's paired kiosk: anonymous
    tickets are bounded per address), timed."""
    remaining = count
    lat: list[float] = []

    async def issuer(c: LeanClient, t0: float) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() - t0 < PHASE_CAP_S:
            remaining -= 1
            s = time.perf_counter()
            r = await c.post("/api/v1/tickets", {"service": next(services)}, KIOSK)
            lat.append(time.perf_counter() - s)
            _ok(r, "take ticket")

    t0 = time.perf_counter()
    await asyncio.gather(*(issuer(c, t0) for c in clients))
    return Figure(len(lat), time.perf_counter() - t0, lat, len(clients))


async def _tickets_at(cfg: HallConfig, port: int) -> Figure:
    """WARMUP then TICKETS tickets from ISSUE_CONCURRENCY lean clients, the latter timed."""
    services = cycle([s.code for s in cfg.services])
    clients = [LeanClient("127.0.0.1", port) for _ in range(ISSUE_CONCURRENCY)]
    try:
        await _issue(clients, services, WARMUP)
        return await _issue(clients, services, TICKETS)
    finally:
        for c in clients:
            await c.close()


def bench_http_floor(cfg: HallConfig, log: Path) -> Figure:
    port = _free_port()
    with serving([sys.executable, "-m", "bench.http_floor", "--port", str(port)],
                 f"http://127.0.0.1:{port}", log, "http_floor",
                 ready_timeout_s=READY_TIMEOUT_S, stop_timeout_s=10):
        return asyncio.run(_tickets_at(cfg, port))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        root = Path(tmp)
        config = bench_config(root)
        cfg = load_config(config)
        base_issue, base_call = bench_domain(cfg)
        (root / "rt").mkdir()
        rt_issue, rt_call = bench_runtime(cfg, root / "rt" / "data")
        (root / "rtc").mkdir()
        rtc_issue, rtc_call = bench_runtime_concurrent(cfg, root / "rtc" / "data")
        (root / "http").mkdir()
        cost = HttpCost()
        http_issue, http_call = bench_http(cfg, config, root / "http" / "data", cost)
        floor_issue = bench_http_floor(cfg, root / "http_floor.log")

    issue_unit, call_unit = "tickets/s", "calls/s"
    for layer, fig, base, name, unit in (
        ("http", http_issue, base_issue, "tickets_issued_per_s", issue_unit),
        ("runtime", rt_issue, base_issue, "tickets_issued_per_s", issue_unit),
        ("runtime_concurrent", rtc_issue, base_issue, "tickets_issued_per_s", issue_unit),
        ("http_floor", floor_issue, base_issue, "tickets_issued_per_s", issue_unit),
        ("http", http_call, base_call, "numbers_called_per_s", call_unit),
        ("runtime", rt_call, base_call, "numbers_called_per_s", call_unit),
        ("runtime_concurrent", rtc_call, base_call, "numbers_called_per_s", call_unit),
    ):
        line = {"bench": "queue",
                **fig.as_dict(layer, f"{layer}.{name}", unit),
                "baseline": base.as_dict("domain", f"domain.{name}", unit)}
        print(json.dumps(line, ensure_ascii=False), flush=True)
    rate = {name: fig.count / fig.seconds for name, fig in (
        ("http", http_issue), ("runtime", rt_issue), ("runtime_concurrent", rtc_issue),
        ("http_floor", floor_issue))}
    cpu = ({"server_cpu_ms_per_request": round(cost.server_cpu_s * 1000 / cost.requests, 3),
            "client_cpu_ms_per_request": round(cost.client_cpu_s * 1000 / cost.requests, 3)}
           if cost.requests else {})
    # The core issue's target: tickets through HTTP with 8 clients at least 0.5 x the runtime
    # layer's rate, the runtime layer as measured when it was set (sequential, "today 0.25").
    print(json.dumps({
        "bench": "queue", "figure": "http_over_runtime.tickets_issued_per_s",
        "value": round(rate["http"] / rate["runtime"], 3), "unit": "ratio",
        "baseline": round(rate["runtime"], 1), "http": round(rate["http"], 1),
        "concurrency": http_issue.concurrency, "target": {"min": 0.5},
        "over_runtime_concurrent": round(rate["http"] / rate["runtime_concurrent"], 3), **cpu,
        "note": "baseline: runtime (rt.execute, one operation and one commit at a time, the "
                "runtime layer of the target's 'today 0.25'); 8 lean HTTP clients, warmed"}),
        flush=True)
    # The same HTTP work against the runtime under the same concurrency (group commit shares
    # fsyncs between concurrent callers, as under HTTP), with the stack's floor beside it.
    print(json.dumps({
        "bench": "queue", "figure": "http_over_runtime_concurrent.tickets_issued_per_s",
        "value": round(rate["http"] / rate["runtime_concurrent"], 3), "unit": "ratio",
        "baseline": round(rate["runtime_concurrent"], 1), "http": round(rate["http"], 1),
        "concurrency": http_issue.concurrency,
        "http_floor_over_runtime_concurrent":
            round(rate["http_floor"] / rate["runtime_concurrent"], 3),
        "note": "baseline: runtime_concurrent (await rt.run from as many concurrent tasks as "
                "HTTP clients, group commit, no HTTP); http_floor: FastAPI + uvicorn with a "
                "route that does nothing (bench.http_floor)"}), flush=True)
    h, r = http_call.count / http_call.seconds, rtc_call.count / rtc_call.seconds
    print(json.dumps({
        "bench": "queue", "figure": "http_over_runtime.numbers_called_per_s",
        "value": round(h / r, 3), "unit": "ratio", "baseline": round(r, 1), "http": round(h, 1),
        "concurrency": http_call.concurrency,
        "over_sequential_runtime": round(h / (rt_call.count / rt_call.seconds), 3),
        "note": "baseline: runtime_concurrent (await rt.run from as many concurrent tasks as "
                "HTTP clients, group commit, no HTTP)"}), flush=True)


if __name__ == "__main__":
    main()
