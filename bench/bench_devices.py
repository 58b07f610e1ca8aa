"""Hall devices bench: latencies to the last byte on the simulators' pseudo-terminals.

Figures (one JSON line each, baseline measured in the same run):
- kiosk request → last printer byte (cut) on the pty, p50/p99; baseline: ESC/POS encode +
  write of the same ticket straight onto the printer's link.
- call → board, by hall size (table "call → board latency by hall size", generated halls of
  10, 50, 100 and 250 windows, bench/halls.py): every window presses CALL on its keypad at once;
  p50/p99 of press → last byte of that window's LED frame. Targets (issue #8, software share):
  p99 ≤ 30 ms at 50 and at 250 windows.
- the same at 50 and 250 windows measured the earlier way (`..._same_process_p50/p99`).
- voice lag (board shows the call → announcement starts) at 10 and 20 calls a minute into one
  zone, in hall seconds (time-scaled playback of real espeak-ng clips); baseline: a lone call.

How the call → board figures are measured. No real hall runs its keypads and boards inside the
box: they are separate hardware on RS-485 lines. So the box runs as a real `hallbox run` in its
own process (bench/boxproc.py), with the generated hall's bus ports pointing at pty symlinks,
exactly as it would open /dev/serial/by-id/... nodes; the keypad and board line simulators
(drivers/sim KeypadBusSim, BoardBusSim over PtyPort) run in the bench's process on its own
event loop. Staff log in on their keypads (staff id:PIN), tickets are taken over HTTP with the
kiosk token so every window has someone to call, then each round every keypad sends CALL, one
frame after another in window order on its line, and after the round NO-SHOW. Times are
CLOCK_MONOTONIC (the loop's clock, system-wide) taken in the simulators' process: when a
keypad's frame is written, and when the read holding the last byte of the frame that changed
that window's board to its call returned. The printer and speakers are left out of that hall:
they are not on the call path and have their own figures here.

The baseline runs in the same topology: a relay process (`relay_main`, the drivers' own codecs
and Link, no runtime, no store) decodes each CALL and writes that window's board frame on the
same kind of ptys. So value − baseline is what the box's queue, group commit and projections
add; the pty hop, the process boundary and the simulators' own work are in both.

The earlier same-process method (the simulators on the box's loop, via the test harness) is
still printed, labelled `same_process`: there the simulators' parsing of 250 frames competes
with the box for one loop and one GIL, which no real hall does.

A pty has no baud rate: on a real 9600-baud RS-485 line each byte adds ~1.04 ms, reported as
its own figure for the LED frame size used here. The machine running the bench is shared;
timings vary 2-5x between runs, so read the ratio to the baseline and repeat.

Run: .venv/bin/python -m bench.bench_devices   (or python bench/bench_devices.py)
"""

from __future__ import annotations

import asyncio
import gc
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

from bench.halls import PIN, big_hall, staff_for, write_toml  # noqa: E402
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
            emit("devices", f"keypad_call_to_last_led_byte_{windows}_windows_same_process_p{p}",
                 pct(lat, p), "ms", pct(base, p), board_lines=lines, calls=len(lat),
                 note="the earlier method: simulators on the box's own event loop (no real "
                 "hall is wired so); software share: ptys have no baud rate; baseline: "
                 "frame_for + link.send of every window's frame at once")
    emit("devices", "rs485_9600_wire_time_per_led_frame", len(sample) * 10 / 9600 * 1000, "ms",
         None)


# ---- the box in its own process ----------------------------------------------------------
HALL_SIZES = (10, 50, 100, 250)
TARGET_P99_MS = {50: 30.0, 250: 30.0}  # issue #8: software share, every window calling at once
XPROC_CALLS = 500  # calls measured per hall size (rounds of every window calling at once)
CALLS_TABLE = "call → board latency by hall size"


def wired_hall(windows: int, dev_dir: Path) -> HallConfig:
    """The generated hall with its RS-485 lines at the simulators' pty symlinks in `dev_dir`.

    No printer and no speakers: they are not on the call path and would be separate benches'
    traffic on the box's loop (bench_printer; bench_voice)."""
    cfg = big_hall(windows, voice=False)
    dev = cfg.devices
    assert dev is not None
    buses = [b.model_copy(update={"port": str(dev_dir / b.id)}) for b in dev.buses]
    return cfg.model_copy(update={"devices": dev.model_copy(
        update={"buses": buses, "printers": []})})


class TimedBoardLine(BoardBusSim):
    """A board line that remembers when each board's text last changed (loop time =
    CLOCK_MONOTONIC, taken when the read holding the frame's last byte returned)."""

    def __init__(self, dev_dir: Path, bus_id: str, boards: dict[int, str]) -> None:
        super().__init__(dev_dir, bus_id, boards)
        self.changed_at: dict[int, float] = {}

    def _show(self, address: int, protocol: str, text: str) -> bool:
        old = self.shown.get(address)
        ok = super()._show(address, protocol, text)
        if ok and old != text:
            self.changed_at[address] = self.last_rx_at[address]
        return ok


class HallWires:
    """Every keypad and board line of a hall, simulated in THIS process (the bench's), on
    ptys whose slave ends the box opens as it would open /dev/serial/by-id/... nodes."""

    def __init__(self, cfg: HallConfig, dev_dir: Path) -> None:
        dev = cfg.devices
        assert dev is not None
        self.boards: dict[str, TimedBoardLine] = {}
        self.pads: dict[str, KeypadBusSim] = {}
        for b in dev.buses:
            on_line = {x.address: x.protocol for x in dev.boards if x.bus == b.id}
            if on_line:
                self.boards[b.id] = TimedBoardLine(dev_dir, b.id, on_line)
            else:
                self.pads[b.id] = KeypadBusSim(
                    dev_dir, b.id, [k.address for k in dev.keypads if k.bus == b.id])
        # window -> (keypad line, address), (board line, address)
        self.pad_of = {k.window: (self.pads[k.bus], k.address) for k in dev.keypads}
        self.board_of = {b.window: (self.boards[b.bus], b.address)
                         for b in dev.boards if b.window is not None}

    @property
    def sims(self) -> list[Any]:
        return [*self.boards.values(), *self.pads.values()]

    def start(self) -> None:
        for s in self.sims:
            s.plug()

    def stop(self) -> None:
        for s in self.sims:
            s.unplug()

    def shown(self, window: int) -> str:
        sim, addr = self.board_of[window]
        return sim.shown.get(addr, "")

    async def quiet(self, quiet_s: float = 0.15, timeout: float = 20.0) -> None:
        """Until no line has received a byte for `quiet_s` (acks, displays, refreshes)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            last = max((s.port.last_rx or 0.0) for s in self.sims)
            if loop.time() - last >= quiet_s:
                return
            await asyncio.sleep(quiet_s / 3)

    async def press_all(self, func: int, data: dict[int, bytes] | None = None
                        ) -> dict[int, float]:
        """Every window's keypad sends `func` now, in window order; press time per window."""
        loop = asyncio.get_running_loop()
        pressed = {}
        for n, (pad, addr) in self.pad_of.items():
            pressed[n] = loop.time()
            pad.press(addr, func, (data or {}).get(n, b""))
        return pressed

    async def calls(self, pressed: dict[int, float], before: dict[int, str],
                    timeout: float = 30.0) -> list[float]:
        """Once every window's board shows a call it did not show before: press → that
        frame's last byte, ms."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout

        def called(n: int) -> bool:
            text = self.shown(n)
            return text != before[n] and text.endswith(f"请到{n}号窗口")

        while not all(called(n) for n in pressed):
            if loop.time() > end:
                missing = [n for n in pressed if not called(n)]
                raise RuntimeError(f"{len(missing)} boards never showed their call, e.g. "
                                   f"{missing[:5]}: {[self.shown(n) for n in missing[:5]]}")
            await asyncio.sleep(0.002)
        out = []
        for n, t0 in pressed.items():
            sim, addr = self.board_of[n]
            out.append((sim.changed_at[addr] - t0) * 1000)
        return out


def quiet_heap() -> None:
    """The simulators' process is the measuring instrument: a full collection of its heap (the
    hall's 500 simulators, httpx, the codecs) during a round stops its reads and would be
    timed as the box's. Its start-up heap is frozen as the box freezes its own."""
    gc.collect()
    gc.freeze()


async def acked(pads: list[KeypadBusSim], want: dict[tuple[str, int], int],
                timeout: float) -> list[int]:
    """Wait until each (line, address) has `want` acks; return the last ack's statuses."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    by_id = {p.bus_id: p for p in pads}
    while any(len(by_id[b].acks[a]) < c for (b, a), c in want.items()):
        if loop.time() > end:
            raise RuntimeError("keypads were not all acknowledged in time")
        await asyncio.sleep(0.005)
    return [by_id[b].acks[a][c - 1][1] for (b, a), c in want.items()]


async def box_calls(tmp: Path, windows: int, rounds: int) -> tuple[list[float], dict[str, Any]]:
    """`hallbox run` in a subprocess; its keypads and boards simulated here. Every window logs
    in on its keypad, then `rounds` times: tickets are taken (HTTP, kiosk token) so every
    window has someone to call, every keypad presses CALL at once, every board's call is
    timed, then every keypad presses NO-SHOW and the lines go quiet."""
    import httpx

    from bench.boxproc import hallbox_run, raise_nofile, rss_kib

    raise_nofile(4096)
    dev_dir = tmp / "dev"
    cfg = wired_hall(windows, dev_dir)
    wires = HallWires(cfg, dev_dir)
    wires.start()
    config = write_toml(cfg, tmp / f"hall-{windows}.toml")
    run = hallbox_run(config, tmp / "data")
    box = await asyncio.to_thread(run.__enter__)
    info: dict[str, Any] = {}
    try:
        pads = list(wires.pads.values())
        staff = dict((w, s) for s, w in staff_for(cfg))
        count = {(p.bus_id, a): len(p.acks[a]) for p in pads for a in p.addresses}
        await wires.press_all(kp.Func.KEY_LOGIN, {n: f"{staff[n]}:{PIN}".encode()
                                                  for n in wires.pad_of})
        statuses = await acked(pads, {k: c + 1 for k, c in count.items()}, 300)
        if any(s != kp.AckStatus.OK for s in statuses):
            raise RuntimeError(f"keypad logins refused: {statuses}")
        await wires.quiet()
        quiet_heap()
        services = {s.code: s for s in cfg.services}
        serving = {s: sum(1 for w in cfg.windows if s in {x.service for x in w.services})
                   for s in services}
        lat: list[float] = []
        async with httpx.AsyncClient(base_url=box.url, timeout=60, trust_env=False,
                                     headers=KIOSK) as c:
            for _ in range(rounds):
                q = (await c.get("/api/v1/queue")).json()
                waiting = {s["service"]: len(s["waiting"]) for s in q["services"]}
                take = [s for s in services for _ in range(serving[s] - waiting[s])]
                for i in range(0, len(take), 32):
                    for r in await asyncio.gather(*(c.post("/api/v1/tickets",
                                                           json={"service": s})
                                                    for s in take[i:i + 32])):
                        if r.status_code != 201:
                            raise RuntimeError(f"take ticket: {r.status_code} {r.text[:200]}")
                await wires.quiet()
                before = {n: wires.shown(n) for n in wires.pad_of}
                pressed = await wires.press_all(kp.Func.KEY_CALL)
                lat += await wires.calls(pressed, before)
                await wires.quiet()
                await wires.press_all(kp.Func.KEY_NO_SHOW)
                await wires.quiet()
        info["box_rss_mb"] = round(rss_kib(box.pid)[0] / 1024, 1)
        info["box_hwm_mb"] = round(rss_kib(box.pid)[1] / 1024, 1)
    finally:
        await asyncio.to_thread(run.__exit__, None, None, None)
        wires.stop()
    return lat, info


def relay_main(config: Path) -> None:
    """The baseline's "box": keypad frames in → board frames out, nothing else (drivers'
    codecs and Link, no runtime, no store). Runs until its stdin closes."""

    async def run() -> None:
        cfg = load_config(config)
        dev = cfg.devices
        assert dev is not None
        buses = {b.id: SharedBus(b.id, b.port, b.baudrate) for b in dev.buses}
        board = {b.window: b for b in dev.boards if b.window is not None}
        pad_at = {(k.bus, k.address): k.window for k in dev.keypads}
        decoders = {b: kp.KeypadDecoder() for b in buses}
        sent = 0

        def on_data(bus_id: str, data: bytes) -> None:
            nonlocal sent
            for f in decoders[bus_id].feed(data):
                n = pad_at.get((bus_id, f.address))
                if n is None or f.func != kp.Func.KEY_CALL:
                    continue
                b = board[n]
                sent += 1
                buses[b.bus].link.send(frame_for(b, f"R{sent:05d} 请到{n}号窗口"))

        for bus_id, bus in buses.items():
            bus.attach(on_data=lambda d, i=bus_id: on_data(i, d))
            await bus.start()
        for bus in buses.values():
            if not await bus.link.wait_online(10):
                raise RuntimeError(f"{bus.name} did not open")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for bus in buses.values():
            await bus.stop()

    asyncio.run(run())


async def relay_calls(tmp: Path, windows: int, rounds: int) -> list[float]:
    """The baseline in the same topology: a relay process (`relay_main`) instead of the box."""
    dev_dir = tmp / "dev-relay"
    cfg = wired_hall(windows, dev_dir)
    wires = HallWires(cfg, dev_dir)
    wires.start()
    config = write_toml(cfg, tmp / f"relay-{windows}.toml")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_devices", "relay", str(config), cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"relay did not start: {line!r}")
        quiet_heap()
        lat: list[float] = []
        for _ in range(rounds):
            before = {n: wires.shown(n) for n in wires.pad_of}
            pressed = await wires.press_all(kp.Func.KEY_CALL)
            lat += await wires.calls(pressed, before)
            await wires.quiet()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        wires.stop()
    return lat


async def bench_box_process(tmp: Path) -> None:
    for windows in HALL_SIZES:
        rounds = max(2, XPROC_CALLS // windows)
        lat, info = await box_calls(tmp / f"box-{windows}", windows, rounds)
        base = await relay_calls(tmp / f"box-{windows}", windows, rounds)
        for p in (50, 99):
            value, baseline = pct(lat, p), pct(base, p)
            extra: dict[str, Any] = {}
            if p == 99 and windows in TARGET_P99_MS:
                extra["target"] = {"max": TARGET_P99_MS[windows]}
            emit("devices", f"keypad_call_to_last_led_byte_{windows}_windows_p{p}", value, "ms",
                 baseline, ratio=round(value / baseline, 2) if baseline else None,
                 table=CALLS_TABLE, row=f"{windows} windows", column=f"p{p} ms",
                 calls=len(lat), rounds=rounds, **extra, **info,
                 note="box (hallbox run) and wire simulators in separate processes; press → "
                 "last byte of that window's LED frame, CLOCK_MONOTONIC in the simulators' "
                 "process; software share (ptys have no baud rate); baseline: a relay process "
                 "doing keypad decode → board frame encode → write on the same ptys")


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
    if sys.argv[1:2] == ["relay"]:
        relay_main(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-devices-") as d:
        tmp = Path(d)
        started = time.perf_counter()
        asyncio.run(bench_printer(tmp))
        asyncio.run(bench_box_process(tmp))
        asyncio.run(bench_boards(tmp))
        asyncio.run(bench_voice(tmp))
        print(json.dumps({"bench": "devices", "figure": "bench_wall_time",
                          "value": round(time.perf_counter() - started, 1), "unit": "s",
                          "baseline": None}), file=sys.stderr)


if __name__ == "__main__":
    main()
