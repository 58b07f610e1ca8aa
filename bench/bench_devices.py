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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.halls import big_hall, staff_for  # noqa: E402
from drivers.base import SharedBus  # noqa: E402
from drivers.board import BoardDriver, frame_for  # noqa: E402
from drivers.printer import TicketPrinter, ticket_content  # noqa: E402
from drivers.protocols import keypad as kp  # noqa: E402
from drivers.protocols.escpos import ticket_bytes  # noqa: E402
from drivers.sim.board import BoardBusSim  # noqa: E402
from drivers.sim.harness import EXAMPLE, KIOSK, MONDAY_0900, SimHall, running_hall  # noqa: E402
from drivers.sim.keypad import KeypadBusSim  # noqa: E402
from drivers.voice import Synth, VoiceZone, WavSink, sentence, wav_seconds  # noqa: E402
from edge.clock import FakeClock, SystemClock  # noqa: E402
from edge.config import HallConfig, load_config, parse_config  # noqa: E402
from edge.config.calling_devices import BoardConfig  # noqa: E402
from edge.runtime import HallRuntime  # noqa: E402

WINDOWS = 50
BIG_WINDOWS = 250  # a generated hall (bench/halls.py), boards and keypads on 5+4 lines
ROUNDS = 20
TICKETS = 200


def emit(bench: str, figure: str, value: float, unit: str, baseline: float | None,
         **kw: Any) -> None:
    print(json.dumps({"bench": bench, "figure": figure, "value": round(value, 3), "unit": unit,
                      "baseline": None if baseline is None else round(baseline, 3), **kw},
                     ensure_ascii=False), flush=True)


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


@dataclass
class CallPath:
    """Where window n's keypad and board are: (simulated line, address) of each."""

    pad: tuple[KeypadBusSim, int]
    board: tuple[BoardBusSim, int]
    cfg: BoardConfig


def call_paths(hall: SimHall) -> dict[int, CallPath]:
    dev = hall.rt.config.devices
    assert dev is not None
    boards = {s.bus_id: s for s in hall.sims if isinstance(s, BoardBusSim)}
    pads = {s.bus_id: s for s in hall.sims if isinstance(s, KeypadBusSim)}
    out = {}
    for k in dev.keypads:
        b = next(b for b in dev.boards if b.window == k.window)
        out[k.window] = CallPath((pads[k.bus], k.address), (boards[b.bus], b.address), b)
    return out


async def settle(hall: SimHall, quiet_s: float = 0.1, timeout: float = 10.0) -> None:
    """Until no simulated line has received a byte for `quiet_s` (displays, board refreshes)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        last = max((s.port.last_rx or 0.0) for s in hall.sims
                   if isinstance(s, BoardBusSim | KeypadBusSim))
        if loop.time() - last >= quiet_s:
            return
        await asyncio.sleep(quiet_s / 2)


async def calls_to_boards(tmp: Path, cfg: HallConfig, windows: int,
                          rounds: int) -> tuple[list[float], list[float], bytes, int]:
    """(call latencies ms, baseline latencies ms, a sample frame, board lines)."""
    async with running_hall(tmp, cfg, clock=SystemClock()) as hall:  # type: ignore[arg-type]
        rt = hall.rt
        paths = call_paths(hall)
        assert len(paths) == windows
        loop = asyncio.get_running_loop()
        services = [s.code for s in cfg.services]
        await asyncio.gather(*(rt.run(lambda h, s=s, n=n: (None, h.login(s, n)))
                               for s, n in staff_for(cfg)))

        def frames(n: int) -> int:
            sim, addr = paths[n].board
            return sim.frames.get(addr, 0)

        async def wait_all(before: dict[int, int]) -> list[float]:
            end = loop.time() + 30
            while loop.time() < end and any(frames(n) <= c for n, c in before.items()):
                await asyncio.sleep(0.001)
            if any(frames(n) <= c for n, c in before.items()):
                raise RuntimeError("a board never got its frame")
            return [paths[n].board[0].last_rx_at[paths[n].board[1]] for n in before]

        serving = {s: sum(1 for w in cfg.windows if s in {x.service for x in w.services})
                   for s in services}
        lat: list[float] = []
        for _ in range(rounds):
            # Each service gets as many waiting tickets as windows serving it, so every
            # window's CALL calls someone (and its board gets a frame).
            await asyncio.gather(*(rt.run(lambda h, s=s: h.issue(s))
                                   for s in services
                                   for _ in range(serving[s] - len(rt.hall.waiting(s)))))
            await settle(hall)
            before = {n: frames(n) for n in paths}
            t0 = loop.time()
            for p in paths.values():
                p.pad[0].press(p.pad[1], kp.Func.KEY_CALL)
            lat += [(t - t0) * 1000 for t in await wait_all(before)]
            await asyncio.gather(*(rt.run(lambda h, n=n: (None, h.no_show(n)))
                                   for n in paths if rt.hall.current_ticket(n) is not None))
            await settle(hall)
        drv: BoardDriver = hall.component(BoardDriver)
        buses = {c.bus_id: c for c in hall.components if isinstance(c, SharedBus)}
        base: list[float] = []
        for r in range(rounds):
            before = {n: frames(n) for n in paths}
            t0 = loop.time()
            for p in paths.values():
                buses[p.cfg.bus].link.send(frame_for(p.cfg, f"A{r:03d} 请到{p.cfg.window}号窗口"))
            base += [(t - t0) * 1000 for t in await wait_all(before)]
            await settle(hall)
        sample = frame_for(drv.boards[1], "A023 请到1号窗口")
        lines = len({p.cfg.bus for p in paths.values()})
    return lat, base, sample, lines


async def bench_boards(tmp: Path) -> None:
    # Rounds: the 250-window hall's daily caps (999 a service) allow 10 rounds of 250 calls.
    for windows, cfg, rounds in ((WINDOWS, hall_of_50(), ROUNDS),
                                 (BIG_WINDOWS, big_hall(BIG_WINDOWS, voice=False), 10)):
        lat, base, sample, lines = await calls_to_boards(tmp / f"boards-{windows}", cfg,
                                                         windows, rounds)
        for p in (50, 99):
            emit("devices", f"keypad_call_to_last_led_byte_{windows}_windows_p{p}",
                 pct(lat, p), "ms", pct(base, p), board_lines=lines, calls=len(lat),
                 note="software share: ptys have no baud rate; baseline: frame_for + "
                 "link.send of every window's frame at once")
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
