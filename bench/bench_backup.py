"""Backups: the online copy of a hall's database, and what it costs the box while it runs.

Figures, one JSON line each:
- backup throughput (MB/s) of `edge.backup.backup` on a 100,000-event database: the SQLite
  online backup, fsync, and the chain verification of the copy. Baseline: a plain file copy
  with fsync of the same file (what a copy that proves nothing costs).
- event commit latency p99 (ms) while the daily backup runs as the box runs it (a child
  process, `edge.backup.run_in_child`). Baseline: the same commits with no backup running,
  in the same run.
Run: .venv/bin/python -m bench.bench_backup
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import tomllib
from datetime import datetime
from pathlib import Path

from edge.backup import backup, run_in_child
from edge.config import parse_config
from edge.domain.model import DomainEvent
from edge.runtime import HallRuntime

ROOT = Path(__file__).resolve().parents[1]
EVENTS = 100_000
SAMPLES = 300


def line(figure: str, value: float, unit: str, baseline: float, **extra: object) -> None:
    print(json.dumps({"bench": "backup", "figure": figure, "value": round(value, 3),
                      "unit": unit, "baseline": round(baseline, 3), **extra}), flush=True)


def notice(i: int, j: int) -> DomainEvent:
    return DomainEvent("display.message", {"command_id": f"b{i}-{j}", "text": "通知" * 60,
                                           "seconds": 60, "target": "main"})


def commit_latencies(rt: HallRuntime, tag: str, n: int) -> list[float]:
    out = []
    for k in range(n):
        t = time.perf_counter()
        rt.emit([notice(-1, hash((tag, k)))])
        out.append((time.perf_counter() - t) * 1000)
    return out


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


def main() -> None:
    text = (ROOT / "config" / "hall.example.toml").read_text(encoding="utf-8")
    cfg = parse_config(tomllib.loads(text[:text.index("# ---- hall devices")]))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rt = HallRuntime.open(cfg, tmp / "data", ignore_hours=True)
        for i in range(EVENTS // 500):
            rt.emit([notice(i, j) for j in range(500)])
        rt.store.flush()
        db = tmp / "data" / "hallbox.db"
        mb = db.stat().st_size / 1e6

        t = time.perf_counter()
        with open(db, "rb") as src, open(tmp / "plain.db", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        plain_s = time.perf_counter() - t
        t = time.perf_counter()
        r = backup(db, tmp / "copy.db")
        backup_s = time.perf_counter() - t
        line("backup_throughput", mb / backup_s, "MB/s", mb / plain_s, events=r.events,
             db_mb=round(mb, 1))

        quiet = commit_latencies(rt, "quiet", SAMPLES)
        done = threading.Event()
        copies = 0

        def keep_copying() -> None:
            nonlocal copies
            while not done.is_set():
                out = tmp / f"daily-{copies}"
                asyncio.run(run_in_child(db, out, now=datetime.now()))
                shutil.rmtree(out)
                copies += 1

        th = threading.Thread(target=keep_copying)
        th.start()
        time.sleep(0.2)  # the copy is under way
        busy = commit_latencies(rt, "busy", SAMPLES)
        done.set()
        th.join()
        line("commit_p99_during_backup", p99(busy), "ms", p99(quiet), backups_run=copies)
        rt.close()


if __name__ == "__main__":
    main()
