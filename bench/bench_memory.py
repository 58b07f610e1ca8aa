"""Box memory: RSS of a real `hallbox run --sim` serving generated halls of 10 to 250 windows.

The box runs as `hallbox run --sim` in a subprocess with the installed device plugins: every
board, keypad, printer and evaluator line of the generated hall (bench/halls.py) is simulated
IN the box process (the simulators are part of the figure, so it is an upper bound for the box
alone). The load is a morning at a large hall, through the HTTP API on loopback: every window's
staff logs in at once, 1,000 tickets are taken, then three rounds of every window calling at
once and finishing. The box's VmRSS is sampled every 20 ms from /proc. The same load, scaled
(4 tickets a window), runs on halls of 10, 50, 100 and 250 windows, each in a fresh box.

Figures, per hall size N (one table, "box memory by hall size"):
- box_rss_N_windows_peak_mb: the highest sampled RSS during the load (and VmHWM);
- box_rss_N_windows_settled_mb: RSS 2 s after the load.
Target: 250 windows within 200 MB (peak). Baseline: a Python process that has imported what the
box imports (the code's own floor).

Run: .venv/bin/python -m bench.bench_memory
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.boxproc import BoxProcess, hallbox_run, rss_kib  # noqa: E402
from bench.halls import PIN, big_hall, staff_for, write_toml  # noqa: E402

HALL_SIZES = (10, 50, 100, 250)
TICKETS_PER_WINDOW = 4
ROUNDS = 3
TARGET_250_MB = 200.0
TABLE = "box memory by hall size"
KIOSK = {"authorization": "Bearer demo-kiosk-token"}
IMPORTS = ("import edge.cli, edge.assembly, edge.api.app, edge.link.sender, uvicorn, "
           "drivers.calling_devices, drivers.supervision_devices")


def emit(figure: str, value: float, unit: str, baseline: float, **kw: Any) -> None:
    print(json.dumps({"bench": "memory", "figure": figure, "value": round(value, 1),
                      "unit": unit, "baseline": round(baseline, 1), **kw},
                     ensure_ascii=False), flush=True)


def imports_only_mb() -> float:
    code = (f"{IMPORTS}\nfor l in open('/proc/self/status'):\n"
            "    l.startswith('VmRSS') and print(l.split()[1])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[0]) / 1024


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss, _ = rss_kib(self.pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):  # exited
                return
            self.peak_kib = max(self.peak_kib, rss)
            time.sleep(0.02)


def ok(r: httpx.Response, what: str) -> dict[str, Any]:
    if r.status_code >= 300:
        raise RuntimeError(f"{what}: {r.status_code} {r.text[:300]}")
    body: dict[str, Any] = r.json()
    return body


def client(box: BoxProcess, windows: int) -> httpx.AsyncClient:
    # A fresh client per phase: uvicorn closes connections idle for 5 s, and a pooled one
    # reused just then fails with a ReadError.
    limits = httpx.Limits(max_connections=windows + 10, max_keepalive_connections=windows + 10)
    return httpx.AsyncClient(base_url=box.url, timeout=120, limits=limits, trust_env=False)


async def load(box: BoxProcess, staff: list[tuple[str, int]], services: list[str],
               t0: float) -> int:
    windows = len(staff)
    tickets = TICKETS_PER_WINDOW * windows
    async with client(box, windows) as c:
        logins = await asyncio.gather(*(
            c.post("/api/v1/sessions", json={"staff_id": s, "pin": PIN, "window": w})
            for s, w in staff))
    print(f"memory: logins done at {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    auth = {w: {"authorization": f"Bearer {ok(r, 'login')['token']}"}
            for (_s, w), r in zip(staff, logins, strict=True)}
    async with client(box, windows) as c:
        for i in range(0, tickets, 16):
            for r in await asyncio.gather(*(
                    c.post("/api/v1/tickets", json={"service": services[j % len(services)]},
                           headers=KIOSK) for j in range(i, min(tickets, i + 16)))):
                ok(r, "take ticket")
    print(f"memory: tickets done at {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    called = 0
    for _ in range(ROUNDS):
        busy = list(auth)
        for step in ("call-next", "start", "finish"):
            began = time.perf_counter()
            async with client(box, windows) as c:
                rs = await asyncio.gather(*(c.post(f"/api/v1/windows/{w}/{step}",
                                                   headers=auth[w]) for w in busy))
            for r in rs:
                ok(r, step)
            if step == "call-next":
                busy = [w for w, r in zip(busy, rs, strict=True) if r.json()["called"]]
                called += len(busy)
            print(f"memory: {len(rs)} x {step} in {time.perf_counter() - began:.2f} s",
                  file=sys.stderr)
    return called


def measure(windows: int, tmp: Path) -> dict[str, Any]:
    """One fresh box serving a generated hall of `windows` windows under the load."""
    cfg = big_hall(windows)
    # Every window's staff logs in from the bench's one loopback address at once; a hall's
    # staff log in from their own desks, so the per-address login limit is lifted here.
    logins = cfg.api.logins.model_copy(update={"per_address_per_minute": 10_000})
    cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"logins": logins})})
    config = write_toml(cfg, tmp / f"hall-{windows}.toml")
    with hallbox_run(config, tmp / f"data-{windows}", sim=True) as box:
        time.sleep(2.0)  # devices online, first board frames and polls written
        started, _ = rss_kib(box.pid)
        sampler = Sampler(box.pid)
        sampler.start()
        t0 = time.perf_counter()
        services = [s.code for s in cfg.services]
        called = asyncio.run(load(box, staff_for(cfg), services, t0))
        took = time.perf_counter() - t0
        time.sleep(2.0)
        settled, hwm = rss_kib(box.pid)
        sampler.stop.set()
        sampler.join()
    return {"peak": max(sampler.peak_kib, settled) / 1024, "settled": settled / 1024,
            "hwm": hwm / 1024, "started": started / 1024, "called": called, "took": took}


def main() -> None:
    base = imports_only_mb()
    note = ("hallbox run --sim, simulators in the box process (counted in); baseline: a "
            "Python process with the box's imports")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
        for windows in HALL_SIZES:
            m = measure(windows, Path(d))
            target = {"target": {"max": TARGET_250_MB}} if windows == 250 else {}
            row = f"{windows} windows"
            emit(f"box_rss_{windows}_windows_peak_mb", m["peak"], "MB", base,
                 vm_hwm_mb=round(m["hwm"], 1), idle_after_start_mb=round(m["started"], 1),
                 windows=windows, tickets=TICKETS_PER_WINDOW * windows,
                 numbers_called=m["called"], load_s=round(m["took"], 1), table=TABLE, row=row,
                 column="peak MB", **target, note=note)
            emit(f"box_rss_{windows}_windows_settled_mb", m["settled"], "MB", base,
                 table=TABLE, row=row, column="settled MB", note=note)


if __name__ == "__main__":
    main()
