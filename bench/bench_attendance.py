"""Attendance: a punch at the (simulated) ZK terminal → its punch.recorded event committed.

Figures, one JSON line each:
- live punch latency p50/p99: terminal writes the live EF_ATTLOG packet → the event is
  committed in the journal (driver decode, dedup lookup, one SQLite transaction with the seen
  row). Baseline: the codec alone (encode + decode of the same packet) in the same run.
- reconnect pull throughput: stored punches per second recorded after a reconnect (2000
  punches). Baseline: raw journal commits of the same events without the protocol.
Run: .venv/bin/python -m bench.bench_attendance  (or python bench/bench_attendance.py)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from drivers.attendance import AttendanceDriver
from drivers.protocols import zk
from drivers.sim.zk_terminal import ZkTerminalSim
from edge.config import load_config
from edge.config.supervision_devices import AttendanceTerminalConfig
from edge.domain.model import DomainEvent
from edge.runtime import HallRuntime

ROOT = Path(__file__).resolve().parents[1]
LIVE_N = 300
PULL_N = 2000


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def line(figure: str, value: float, unit: str, baseline: float) -> None:
    print(json.dumps({"bench": "attendance", "figure": figure, "value": round(value, 3),
                      "unit": unit, "baseline": round(baseline, 3)}))


async def run(tmp: Path) -> None:
    cfg = load_config(ROOT / "config" / "hall.example.toml")
    rt = HallRuntime.open(cfg, tmp / "data")
    term = AttendanceTerminalConfig(id="zk-bench", host="127.0.0.1", timeout_ms=5000)
    sim = ZkTerminalSim([zk.ZkUser(1, "1001", "王芳")])
    await sim.start()
    drv = AttendanceDriver(rt, term, endpoint=sim.endpoint)
    await drv.start()
    await asyncio.wait_for(drv.synced.wait(), 10)
    committed: dict[str, float] = {}
    rt.bus.subscribe("bench", lambda env: committed.__setitem__(env["data"].get("at", ""),
                                                                time.perf_counter()))
    base = datetime(2026, 11, 23, 8, 0, 0)
    lat = []
    for i in range(LIVE_N):
        when = base + timedelta(seconds=i)
        key = when.isoformat() + ".000+08:00"
        t0 = time.perf_counter()
        sim.punch("1001", when)
        while key not in committed:
            await asyncio.sleep(0)
        lat.append((committed[key] - t0) * 1000)
    codec = []
    for i in range(LIVE_N):
        p = zk.ZkPunch("1001", base + timedelta(seconds=i))
        t0 = time.perf_counter()
        zk.ZkDecoder().feed(zk.encode(zk.ZkPacket(zk.CMD_REG_EVENT, 1, 0, zk.pack_live(p))))
        codec.append((time.perf_counter() - t0) * 1000)
    line("live_punch_to_commit_p50", statistics.median(lat), "ms", statistics.median(codec))
    line("live_punch_to_commit_p99", pct(lat, 0.99), "ms", pct(codec, 0.99))

    # Reconnect pull: punches stored while the link was down.
    await sim.unplug()
    for i in range(PULL_N):
        sim.records.append(zk.ZkPunch("1001", base + timedelta(hours=2, seconds=i)))
    drv.synced.clear()
    t0 = time.perf_counter()
    await sim.replug()
    await asyncio.wait_for(drv.synced.wait(), 60)
    pull = time.perf_counter() - t0
    await drv.stop()
    await sim.stop()
    t0 = time.perf_counter()
    # Same-sized events, one transaction: what the pull costs without protocol and dedup.
    rt.emit([DomainEvent("punch.recorded", {"terminal": "zk-bench", "user_id": "1001",
                                            "staff": None, "name": "王芳", "at": str(i),
                                            "kind": "check_in", "punch": 0, "verify": 1,
                                            "source": "stored"}) for i in range(PULL_N)])
    raw = time.perf_counter() - t0
    line("reconnect_pull_rate", PULL_N / pull, "punches/s", PULL_N / raw)
    rt.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run(Path(d)))


if __name__ == "__main__":
    main()
