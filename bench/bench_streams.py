"""Idle board-stream clients against taking a ticket.

A real `hallbox run` (no devices, the example hall with its daily caps raised) on loopback.
One kiosk client takes tickets one at a time, in blocks: a block with no stream client
connected (the baseline) and a block with STREAM_CLIENTS connections open on
/api/v1/board/stream that never read a byte after the response headers (a hall full of idle
displays). Every ticket changes the board, so the box has to offer it to every one of them.

Why blocks, interleaved, in one box: on a shared machine a p99 of a few ms over a few hundred
samples is mostly the neighbours' noise, and the box drifts (its queue grows with every
ticket). So both conditions are measured in the same box process, alternately (ABBA order:
neither always goes first), each block after the same warm-up, and the figure pools every
block of a condition (REPS x TICKETS samples each). The per-repetition p99s and their ratios
are printed too, so a lucky pool hides nothing. The box's CPU time per ticket (all its
threads, from /proc) is printed beside: it is what the clients really cost, and much less
noisy than a latency tail. Before a crowded block the box must report
all STREAM_CLIENTS connected (/healthz); before a block without clients, none.

The open-file limit is raised in this process before the box is started (the box inherits it):
each stream client is a socket on both ends.

Run: .venv/bin/python -m bench.bench_streams
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.boxproc import cpu_s, hallbox_run, raise_nofile  # noqa: E402

STREAM_CLIENTS = 1000
TICKETS = 150  # per block
REPS = 10  # blocks per condition
WARMUP = 50
TARGET_RATIO = 2.0  # issue #8: p99 with the clients at most 2 x the p99 without
SERVICES = ["SHMS", "ZCDJ", "JYXK", "TZJS", "GA", "RS", "SW"]
KIOSK = {"authorization": "Bearer demo-kiosk-token"}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[max(0, math.ceil(p * len(xs)) - 1)]


async def take_tickets(c: httpx.AsyncClient, n: int) -> list[float]:
    lat: list[float] = []
    for i in range(n):
        s = time.perf_counter()
        r = await c.post("/api/v1/tickets", json={"service": SERVICES[i % len(SERVICES)]},
                         headers=KIOSK)
        lat.append((time.perf_counter() - s) * 1000)
        if r.status_code != 201:
            raise RuntimeError(f"take ticket: {r.status_code} {r.text[:300]}")
    return lat


async def idle_client(host: str, port: int) -> tuple[int, asyncio.StreamWriter | None]:
    """Open the board stream, read the status line and headers, then never read again."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0, None
    writer.write(f"GET /api/v1/board/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
        writer.close()
        return 0, None
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(m.group(1)) if m else 0), writer


async def stream_clients_on_box(c: httpx.AsyncClient, want: int) -> None:
    """Wait until the box itself counts `want` stream clients (connected, or all gone)."""
    deadline = time.monotonic() + 60
    while (n := (await c.get("/healthz")).json()["streams"]["clients"]) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the box counts {n} stream clients, expected {want}")
        await asyncio.sleep(0.05)


async def timed_block(c: httpx.AsyncClient, pid: int) -> list[float]:
    """TICKETS tickets; the box's CPU ms per ticket over the block is appended last."""
    before = cpu_s(pid)
    lat = await take_tickets(c, TICKETS)
    return [*lat, (cpu_s(pid) - before) * 1000 / TICKETS]


async def crowded_block(c: httpx.AsyncClient, url: str, pid: int
                        ) -> tuple[list[float], dict[int, int]]:
    host, port = url.removeprefix("http://").split(":")
    results = []
    try:
        for i in range(0, STREAM_CLIENTS, 100):  # in batches: the listen backlog is finite
            results += await asyncio.gather(*(idle_client(host, int(port))
                                              for _ in range(i, min(STREAM_CLIENTS, i + 100))))
        statuses: dict[int, int] = {}
        for status, _w in results:
            statuses[status] = statuses.get(status, 0) + 1
        await stream_clients_on_box(c, statuses.get(200, 0))
        await asyncio.sleep(1.0)  # the connects' work is over before the first ticket
        return await timed_block(c, pid), statuses
    finally:
        for _s, w in results:
            if w is not None:
                w.close()
        await stream_clients_on_box(c, 0)


async def alone_block(c: httpx.AsyncClient, pid: int) -> list[float]:
    await stream_clients_on_box(c, 0)
    await asyncio.sleep(1.0)  # the same settling pause as a crowded block
    return await timed_block(c, pid)


async def interleaved(url: str, pid: int
                      ) -> tuple[list[list[float]], list[list[float]], dict[int, int]]:
    alone: list[list[float]] = []
    crowded: list[list[float]] = []
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as c:
        await take_tickets(c, WARMUP)
        for rep in range(REPS):
            order = ("alone", "crowded") if rep % 2 == 0 else ("crowded", "alone")
            for what in order:
                if what == "alone":
                    alone.append(await alone_block(c, pid))
                else:
                    lat, got = await crowded_block(c, url, pid)
                    crowded.append(lat)
                    for k, v in got.items():
                        statuses[k] = statuses.get(k, 0) + v
    return alone, crowded, statuses


def emit(figure: str, value: float, baseline: float, **kw: Any) -> None:
    print(json.dumps({"bench": "streams", "figure": figure, "value": round(value, 3),
                      "unit": "ms", "baseline": round(baseline, 3),
                      "ratio": round(value / baseline, 2), **kw}, ensure_ascii=False),
          flush=True)


def main() -> None:
    nofile = raise_nofile(4 * STREAM_CLIENTS + 1024)
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as d:
        tmp = Path(d)
        config = tmp / "hall.toml"
        text = (ROOT / "config" / "hall.example.toml").read_text(encoding="utf-8")
        config.write_text(re.sub(r"(?m)^daily_cap = \d+$", "daily_cap = 999", text),
                          encoding="utf-8")
        with hallbox_run(config, tmp / "data", devices=False) as box:
            alone, crowded, statuses = asyncio.run(interleaved(box.url, box.pid))
    kw = {"stream_clients": STREAM_CLIENTS, "stream_answers": statuses,
          "tickets": f"{REPS} x {TICKETS} per condition", "nofile": nofile}
    note = ("hallbox run on loopback, one kiosk client; stream clients read nothing after the "
            f"headers; baseline: the same box with no stream client, in blocks interleaved "
            f"ABBA with the crowded ones ({REPS} x {TICKETS} tickets each); value and baseline "
            "pool every block; repetitions: [p without, p with, ratio] per pair of blocks")
    cpu_a = [b.pop() for b in alone]
    cpu_c = [b.pop() for b in crowded]
    for p in (0.50, 0.99):
        reps = [[round(pct(a, p), 2), round(pct(c, p), 2), round(pct(c, p) / pct(a, p), 2)]
                for a, c in zip(alone, crowded, strict=True)]
        ratios = [r[2] for r in reps]
        extra: dict[str, Any] = {"target": {"max": TARGET_RATIO, "on": "ratio"}} \
            if p == 0.99 else {}
        emit(f"ticket_p{int(p * 100)}_with_{STREAM_CLIENTS}_idle_board_streams",
             pct([x for b in crowded for x in b], p), pct([x for b in alone for x in b], p),
             **extra, repetitions=reps, ratio_median=round(statistics.median(ratios), 2),
             ratio_range=[min(ratios), max(ratios)], **kw, note=note)
    emit(f"box_cpu_per_ticket_with_{STREAM_CLIENTS}_idle_board_streams",
         statistics.median(cpu_c), statistics.median(cpu_a),
         repetitions=[[round(a, 3), round(c, 3)] for a, c in zip(cpu_a, cpu_c, strict=True)],
         **kw, note="CPU time of the box process (every thread) over a block / its tickets, "
         "median over blocks; baseline: the blocks without stream clients; repetitions: "
         "[without, with] per pair of blocks")


if __name__ == "__main__":
    main()
