"""Hall devices bench: latencies to the last byte on the simulators' pseudo-terminals.

Figures (one JSON line each, baseline measured in the same run):
- kiosk request → last printer byte (cut) on the pty, p50/p99; baseline: ESC/POS encode +
  write of the same ticket straight onto the printer's link.
- call (50 windows pressing CALL on their keypads at once) → last byte of that window's LED
  frame on the board line's pty, p50/p99; baseline: encode + write of 50 board frames.
- voice lag (board shows the call → announcement starts) at 10 and 20 calls a minute into one
  zone, in hall seconds (time-scaled playback of real espeak-ng clips); baseline: a lone call.

A pty has no baud rate: on a real 9600-baud RS-485 line each byte adds ~1.04 ms, reported as
its own figure for the LED frame size used here.

Run: .venv/bin/python -m bench.bench_devices   (or python bench/bench_devices.py)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.board import BoardDriver, frame_for  # noqa: E402
from drivers.printer import TicketPrinter, ticket_content  # noqa: E402
from drivers.protocols import keypad as kp  # noqa: E402
from drivers.protocols.escpos import ticket_bytes  # noqa: E402
from drivers.sim.harness import EXAMPLE, KIOSK, MONDAY_0900, running_hall  # noqa: E402
from drivers.voice import Synth, VoiceZone, WavSink, sentence, wav_seconds  # noqa: E402
from edge.clock import FakeClock, SystemClock  # noqa: E402
from edge.config import HallConfig, load_config, parse_config  # noqa: E402
from edge.runtime import HallRuntime  # noqa: E402

WINDOWS = 50
ROUNDS = 20
TICKETS = 200


def emit(bench: str, figure: str, value: float, unit: str, baseline: float | None) -> None:
    print(json.dumps({"bench": bench, "figure": figure, "value": round(value, 3), "unit": unit,
                      "baseline": None if baseline is None else round(baseline, 3)}),
          flush=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def hall_of_50() -> HallConfig:
    base = load_config(EXAMPLE)
    raw: dict[str, Any] = {
        "hall": base.hall.model_dump(),
        "api": base.api.model_dump(),
        "services": [
            {"code": "SHMS", "name": "社会民生", "prefix": "A", "daily_cap": 999},
            {"code": "ZCDJ", "name": "注册登记", "prefix": "B", "daily_cap": 999},
        ],
        "windows": [{"number": n, "name": f"{n}号窗", "services": ["SHMS", "ZCDJ"]}
                    for n in range(1, WINDOWS + 1)],
        "staff": [{"id": f"S{n:03d}", "name": f"员工{n}", "department": "区政务服务中心",
                   "pin_hash": base.staff[0].pin_hash} for n in range(1, WINDOWS + 1)],
        "devices": {
            "printers": [base.devices.printers[0].model_dump()] if base.devices else [],
            "buses": [{"id": "boards", "port": "/dev/ttyRS485-0"},
                      {"id": "keypads", "port": "/dev/ttyRS485-1"}],
            "boards": [{"id": "main", "bus": "boards", "protocol": "bx5", "address": 200,
                        "main": True}] +
                      [{"id": f"b{n}", "bus": "boards", "protocol": "bx5" if n % 2 else "at",
                        "address": n, "window": n} for n in range(1, WINDOWS + 1)],
            "keypads": [{"id": f"k{n}", "bus": "keypads", "address": n, "window": n}
                        for n in range(1, WINDOWS + 1)],
        },
    }
    raw["hall"]["hours"] = ["00:00-24:00"]
    raw["hall"]["days"] = [1, 2, 3, 4, 5, 6, 7]
    return parse_config(raw, "bench")


async def bench_printer(tmp: Path) -> None:
    async with running_hall(tmp / "printer") as hall:
        sim = hall.printer
        printer: TicketPrinter = hall.component(TicketPrinter)
        lat: list[float] = []
        loop = asyncio.get_running_loop()
        for i in range(TICKETS):
            t0 = loop.time()
            r = await hall.client.post("/api/v1/tickets", json={"service": "GA"},
                                       headers=KIOSK)
            assert r.status_code == 201 and r.json()["printer"]["printed"], r.text
            await sim.wait_ticket(i + 1)
            assert sim.last_cut_at is not None
            lat.append((sim.last_cut_at - t0) * 1000)
        env = hall.events("ticket.issued")[-1]
        base: list[float] = []
        for i in range(TICKETS):
            t0 = loop.time()
            printer.link.send(ticket_bytes(ticket_content(hall.rt, printer.cfg, env)))
            await sim.wait_ticket(TICKETS + i + 1)
            assert sim.last_cut_at is not None
            base.append((sim.last_cut_at - t0) * 1000)
    for p in (50, 99):
        emit("devices", f"kiosk_to_last_printer_byte_p{p}", pct(lat, p), "ms", pct(base, p))


async def bench_boards(tmp: Path) -> None:
    cfg = hall_of_50()
    async with running_hall(tmp / "boards", cfg, clock=SystemClock()) as hall:  # type: ignore[arg-type]
        rt = hall.rt
        boards, pads = hall.boards, hall.keypads
        loop = asyncio.get_running_loop()
        for n in range(1, WINDOWS + 1):
            rt.execute(lambda h, n=n: (None, h.login(f"S{n:03d}", n)))
        lat: list[float] = []
        for r in range(ROUNDS):
            for _ in range(WINDOWS):
                rt.execute(lambda h, r=r: h.issue("SHMS" if r % 2 else "ZCDJ"))
            before = {n: boards.frames.get(n, 0) for n in range(1, WINDOWS + 1)}
            t0 = loop.time()
            for n in range(1, WINDOWS + 1):
                pads.press(n, kp.Func.KEY_CALL)
            end = loop.time() + 10
            while loop.time() < end and any(boards.frames.get(n, 0) <= before[n]
                                            for n in before):
                await asyncio.sleep(0.001)
            lat += [(boards.last_rx_at[n] - t0) * 1000 for n in before]
            for n in range(1, WINDOWS + 1):
                rt.execute(lambda h, n=n: (None, h.no_show(n)))
            await asyncio.sleep(0.05)
        drv: BoardDriver = hall.component(BoardDriver)
        bus = hall.components[[type(c).__name__ for c in hall.components].index("SharedBus")]
        base: list[float] = []
        for r in range(ROUNDS):
            before = {b.address: boards.frames.get(b.address, 0) for b in drv.boards
                      if b.window}
            t0 = loop.time()
            for b in drv.boards:
                if b.window:
                    bus.link.send(frame_for(b, f"A{r:03d} 请到{b.window}号窗口"))
            end = loop.time() + 10
            while loop.time() < end and any(boards.frames.get(a, 0) <= c
                                            for a, c in before.items()):
                await asyncio.sleep(0.001)
            base += [(boards.last_rx_at[a] - t0) * 1000 for a in before]
        sample = frame_for(drv.boards[1], "A023 请到1号窗口")
    for p in (50, 99):
        emit("devices", f"keypad_call_to_last_led_byte_50_windows_p{p}", pct(lat, p), "ms",
             pct(base, p))
    emit("devices", "rs485_9600_wire_time_per_led_frame", len(sample) * 10 / 9600 * 1000, "ms",
         None)


async def bench_voice(tmp: Path) -> None:
    if not shutil.which("espeak-ng"):
        print(json.dumps({"bench": "devices", "figure": "voice_lag", "skipped":
                          "espeak-ng not installed"}))
        return
    scale = 0.05  # a 4 s clip plays in 0.2 s; arrivals are scaled the same way
    cfg = load_config(EXAMPLE)
    rt = HallRuntime.open(cfg, tmp / "voice-rt", clock=FakeClock(MONDAY_0900))
    synth = Synth(tmp / "voice-cache", "cmn", 175, size=1000)
    # A zone of 30 windows: a window gets its next call only after a service, so calls for the
    # same window rarely meet in the queue (with few windows, newer calls would replace queued
    # ones and hide the lag bound's work).
    windows = list(range(1, 31))
    calls = [(f"A{i + 1:03d}", windows[i % len(windows)]) for i in range(60)]
    for number, w in calls:  # warm the cache: the lag measured is queueing, not synthesis
        await synth.wav(sentence(number, w))
    durations = [wav_seconds(await synth.wav(sentence(n, w))) for n, w in calls]

    async def run(per_minute: float, count: int) -> tuple[list[float], int, int, int]:
        zone = VoiceZone(rt, f"bench{int(per_minute)}", windows, synth,
                         WavSink(tmp / "voice-out", time_scale=scale), repeat=2,
                         backlog_drop_repeats=2, max_lag_s=30 * scale)
        await zone.start()
        gap = 60 / per_minute * scale
        for number, w in calls[:count]:
            zone.announce(number, w)
            await asyncio.sleep(gap)
        await zone.idle(120)
        await zone.stop()
        return ([x / 1000 / scale for x in zone.stats.lags_ms], zone.stats.skipped_lag,
                zone.stats.dropped_repeats, zone.stats.superseded)

    lone, _, _, _ = await run(1, 1)
    for rate in (10, 20):
        lags, skipped, dropped, superseded = await run(rate, 60)
        for p in (50, 99):
            emit("devices", f"voice_lag_{rate}_per_min_p{p}", pct(lags, p), "s",
                 pct(lone, 50))
        emit("devices", f"voice_skipped_over_30s_{rate}_per_min", skipped, "calls of 60", 0)
        emit("devices", f"voice_repeats_dropped_{rate}_per_min", dropped, "repeats of 60", 0)
        emit("devices", f"voice_superseded_{rate}_per_min", superseded, "calls of 60", 0)
    emit("devices", "voice_clip_seconds_mean", statistics.mean(durations), "s", None)
    rt.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-devices-") as d:
        tmp = Path(d)
        started = time.perf_counter()
        asyncio.run(bench_printer(tmp))
        asyncio.run(bench_boards(tmp))
        asyncio.run(bench_voice(tmp))
        print(json.dumps({"bench": "devices", "figure": "bench_wall_time",
                          "value": round(time.perf_counter() - started, 1), "unit": "s",
                          "baseline": None}), file=sys.stderr)


if __name__ == "__main__":
    main()
