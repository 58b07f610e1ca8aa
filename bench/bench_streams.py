"""Idle board-stream clients against taking a ticket.

A real `hallbox run` (no devices, the example hall with its daily caps raised) on loopback.
Tickets are taken by one kiosk client, one at a time, first with no stream client connected
(the baseline), then with STREAM_CLIENTS connections open on /api/v1/board/stream that never
read a byte after the response headers (a hall full of stuck displays): every ticket changes
the board, so the box has to render and offer it to every one of them. The figure is the
ticket's p99 (and p50) with them connected; the issue's target is at most 2 x the baseline.

The open-file limit is raised in this process before the box is started (the box inherits it):
each stream client is a socket on both ends.

Run: .venv/bin/python -m bench.bench_streams
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.boxproc import hallbox_run, raise_nofile  # noqa: E402

STREAM_CLIENTS = 1000
TICKETS = 300
SERVICES = ["SHMS", "ZCDJ", "JYXK", "TZJS", "GA", "RS", "SW"]
KIOSK = {"authorization": "Bearer demo-kiosk-token"}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[max(0, math.ceil(p * len(xs)) - 1)]


async def take_tickets(url: str, n: int) -> list[float]:
    lat: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as c:
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


async def with_stream_clients(url: str) -> tuple[list[float], dict[int, int]]:
    host, port = url.removeprefix("http://").split(":")
    results = []
    for i in range(0, STREAM_CLIENTS, 100):  # in batches: the listen backlog is finite
        results += await asyncio.gather(*(idle_client(host, int(port))
                                          for _ in range(i, min(STREAM_CLIENTS, i + 100))))
    statuses: dict[int, int] = {}
    for status, _w in results:
        statuses[status] = statuses.get(status, 0) + 1
    await asyncio.sleep(1.0)
    try:
        return await take_tickets(url, TICKETS), statuses
    finally:
        for _s, w in results:
            if w is not None:
                w.close()


def emit(figure: str, value: float, baseline: float, **kw: Any) -> None:
    print(json.dumps({"bench": "streams", "figure": figure, "value": round(value, 3),
                      "unit": "ms", "baseline": round(baseline, 3), **kw},
                     ensure_ascii=False), flush=True)


def main() -> None:
    nofile = raise_nofile(4 * STREAM_CLIENTS + 1024)
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as d:
        tmp = Path(d)
        config = tmp / "hall.toml"
        text = (ROOT / "config" / "hall.example.toml").read_text(encoding="utf-8")
        config.write_text(re.sub(r"(?m)^daily_cap = \d+$", "daily_cap = 999", text),
                          encoding="utf-8")
        with hallbox_run(config, tmp / "data", devices=False) as box:
            asyncio.run(take_tickets(box.url, 20))  # warm up
            alone = asyncio.run(take_tickets(box.url, TICKETS))
            crowded, statuses = asyncio.run(with_stream_clients(box.url))
    kw = {"stream_clients": STREAM_CLIENTS, "stream_answers": statuses, "tickets": TICKETS,
          "nofile": nofile, "note": "hallbox run on loopback, one kiosk client; stream "
          "clients read nothing after the headers; baseline: the same with no stream client"}
    for p in (0.50, 0.99):
        a, c = pct(alone, p), pct(crowded, p)
        emit(f"ticket_p{int(p * 100)}_with_{STREAM_CLIENTS}_idle_board_streams", c, a,
             ratio=round(c / a, 2), **kw)


if __name__ == "__main__":
    main()
