"""Supervision: statistics over a journal, the monthly summary, one floor evaluation.

Figures, one JSON line each (a box that ran 20 working days, 300 tickets a day at 14 windows,
ratings and 4 punches a day per staff member):
- stats_month_ms: `GET /api/v1/stats` work for the month by window (journal read + the pure
  module). Baseline: reading and decoding the same journal rows alone.
- attendance_summary_ms: the month's summary for every staff member from the punches.
  Baseline: reading and decoding the punch rows alone.
- evaluate_ms: one floor evaluation (alerts, spot checks, day judgement) with tickets waiting.
  Baseline: the hall board view of the same hall.
Run: .venv/bin/python -m bench.bench_supervision
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.assembly import HallServices
from edge.clock import FakeClock
from edge.config import load_config
from edge.domain import stats
from edge.domain.model import DomainEvent
from edge.domain.rating import Level, Submission
from edge.events import rfc3339
from edge.link.commands import builtin_commands
from edge.ratings import RatingService
from edge.runtime import HallRuntime
from edge.supervision import Supervision, install

ROOT = Path(__file__).resolve().parents[1]
TZ = ZoneInfo("Asia/Shanghai")
DAYS = 20
TICKETS = 300


def line(figure: str, value: float, unit: str, baseline: float, **extra: object) -> None:
    print(json.dumps({"bench": "supervision", "figure": figure, "value": round(value, 3),
                      "unit": unit, "baseline": round(baseline, 3), **extra}), flush=True)


def timed(fn: object, n: int = 5) -> float:
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        xs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(xs)


def build(tmp: Path) -> tuple[HallRuntime, Supervision]:
    cfg = load_config(ROOT / "config" / "hall.example.toml")
    clock = FakeClock(datetime(2026, 11, 2, 8, 0, tzinfo=TZ))
    rt = HallRuntime.open(cfg, tmp / "data", clock=clock, ignore_hours=True)
    assert cfg.rating is not None
    services = HallServices(ratings=RatingService(rt, cfg.rating), commands=builtin_commands())
    svc = install(rt, services)
    desk = services.ratings.desk  # type: ignore[union-attr]
    windows = {w.number: [s.service for s in w.services] for w in cfg.windows}
    staff = [s.id for s in cfg.staff]
    d, done = date(2026, 11, 2), 0
    levels = list(Level)
    while done < DAYS:
        if d.isoweekday() <= 5:
            clock.set(datetime.combine(d, datetime.min.time(), TZ) + timedelta(hours=8))
            rt.tick()
            for i, s in enumerate(staff):
                for hh, mm in ((8, 20 + i % 15), (12, 1), (13, 25), (17, 31)):
                    at = datetime(d.year, d.month, d.day, hh, mm, tzinfo=TZ)
                    rt.emit([DomainEvent("punch.recorded", {
                        "terminal": "zk", "user_id": s, "staff": s, "name": None,
                        "at": rfc3339(at), "kind": "check_in", "punch": 0, "verify": 1,
                        "source": "live"})])
            clock.set(datetime.combine(d, datetime.min.time(), TZ)
                      + timedelta(hours=8, minutes=30))
            for n, s in zip(windows, staff, strict=False):
                rt.execute(lambda h, n=n, s=s: (None, h.login(s, n)))
            for k in range(TICKETS):
                n = 1 + k % len(windows)
                rt.execute(lambda h, n=n: h.issue(windows[n][0]))
                clock.advance(seconds=20)
                rt.execute(lambda h, n=n: h.call_next(n))
                if rt.hall.windows[n].current is None:
                    continue
                rt.execute(lambda h, n=n: (None, h.start(n)))
                clock.advance(seconds=60)
                rt.execute(lambda h, n=n: (None, h.finish(n)))
                if k % 3:
                    sub = Submission(n, levels[k % 4], "keypad", f"eval-w{n}")
                    rt.execute(lambda h, sub=sub: desk.submit(h, sub))
            clock.set(datetime.combine(d, datetime.min.time(), TZ) + timedelta(hours=18))
            rt.execute(lambda h: (None, desk.sweep(h)))
            svc.tick()
            done += 1
        d += timedelta(days=1)
    return rt, svc


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rt, svc = build(Path(tmp))
        start, end = date(2026, 11, 1), date(2026, 11, 30)
        n_events = rt.store.head_seq

        def read_only() -> None:
            lo, hi = stats.day_bounds(start, end, TZ)
            rt.store.journal_of_types([t for t in stats.TYPES if t != "attendance.recorded"],
                                      lo, hi, always=["attendance.recorded"])

        line("stats_month_ms", timed(lambda: svc.stats(start, end, "window")), "ms",
             timed(read_only), journal_events=n_events)
        line("attendance_summary_ms", timed(lambda: svc.month_summary("2026-11")), "ms",
             timed(lambda: svc.punches(start)), staff=len(rt.config.staff))
        for _ in range(40):
            rt.execute(lambda h: h.issue("SHMS"))
        line("evaluate_ms", timed(svc.evaluate, 20), "ms", timed(rt.hall.board, 20))
        rt.close()


if __name__ == "__main__":
    main()
