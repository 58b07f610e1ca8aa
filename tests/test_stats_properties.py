"""The statistics module on random hall histories (hypothesis): every ticket, serve, no-show and
rating is counted once in every grouping, whatever the order the events are handed over in."""

from __future__ import annotations

import random
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.clock import FakeClock
from edge.domain import stats
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.domain.queue import Hall
from edge.events import GENESIS_HASH, seal
from tests.conftest import MONDAY_0900

SERVICES = ("SHMS", "ZCDJ", "GA")
WINDOWS = {1: "S001", 3: "S003", 4: "S004", 8: "S008"}
OPS = st.lists(st.tuples(st.sampled_from(["issue", "call", "no_show", "reactivate", "finish",
                                          "transfer", "rate", "unrated", "wait"]),
                         st.integers(0, 1000)), min_size=5, max_size=120)


def history(hall_config, ops: list[tuple[str, int]]) -> list[dict]:
    clock = FakeClock(MONDAY_0900)
    hall = Hall(hall_config, clock, ignore_hours=True)
    envs: list[dict] = []
    prev = GENESIS_HASH

    def record(events) -> None:
        nonlocal prev
        for e in events:
            env = seal(seq=len(envs) + 1, ts=hall.local(), site="s", box="b", type_=e.type,
                       data=e.data, prev_hash=prev)
            prev = env["hash"]
            envs.append(env)

    record(hall.open_day_if_needed())
    for w, s in WINDOWS.items():
        record(hall.login(s, w))
    for op, k in ops:
        w = list(WINDOWS)[k % len(WINDOWS)]
        try:
            if op == "issue":
                record(hall.issue(SERVICES[k % 3])[1])
            elif op == "call":
                record(hall.call_next(w)[1])
            elif op == "no_show":
                record(hall.no_show(w))
            elif op == "reactivate":
                gone = [t for t in hall.tickets.values() if t.state == "no_show"]
                if gone:
                    record(hall.reactivate(gone[k % len(gone)].id))
            elif op == "finish":
                record(hall.start(w))
                clock.advance(seconds=30 + k)
                record(hall.finish(w))
            elif op == "transfer":
                record(hall.transfer(w, "GA" if w != 8 else "SHMS")[1])
            elif op in ("rate", "unrated"):
                done = [t for t in hall.tickets.values() if t.state == "finished"]
                if done:
                    t = done[k % len(done)]
                    data = {"ticket": t.id, "number": t.number, "service": t.service,
                            "window": t.window, "staff": t.staff}
                    if op == "rate":
                        data["level"] = stats.LEVELS[k % 5]
                    record([DomainEvent("rating.submitted" if op == "rate"
                                        else "rating.missing", data)])
            else:
                clock.advance(seconds=k)
        except DomainError:
            pass
    return envs


@settings(max_examples=40, deadline=None)
@given(OPS, st.randoms(use_true_random=False))
def test_every_grouping_counts_each_thing_once(hall_config, ops, rnd: random.Random) -> None:
    envs = history(hall_config, ops)
    day = date(2026, 11, 23)
    out = {by: stats.compute(envs, tz="Asia/Shanghai", start=day, end=day, by=by)
           for by in stats.DIMENSIONS}
    total = out["service"]["total"]
    issued = sum(e["type"] == "ticket.issued" for e in envs)
    assert total["tickets"] == issued
    for by in stats.DIMENSIONS:
        res = out[by]
        assert res["total"] == total
        rows = res["rows"]
        for f in ("served", "no_shows", "transferred", "rated", "unrated"):
            assert sum(r[f] for r in rows) == total[f], (by, f)
        for lv in stats.LEVELS:
            assert sum(r["ratings"][lv] for r in rows) == total["ratings"][lv]
        for r in rows:
            if r["p90_wait_ms"] is not None:
                assert r["avg_wait_ms"] is not None and r["p90_wait_ms"] >= 0
            if r["satisfaction_rate"] is not None:
                assert 0 <= r["satisfaction_rate"] <= 100
    called = {e["data"]["ticket"] for e in envs if e["type"] == "ticket.called"}
    assert sum(r["tickets"] for r in out["window"]["rows"]) == len(called)
    assert sum(r["tickets"] for r in out["day"]["rows"]) == issued
    shuffled = envs[:]
    rnd.shuffle(shuffled)
    assert stats.compute(shuffled, tz="Asia/Shanghai", start=day, end=day,
                         by="window") == out["window"]


def test_percentile_and_mean() -> None:
    assert stats.p90([]) is None and stats.mean([]) is None
    assert stats.p90([5]) == 5
    assert stats.p90(list(range(1, 11))) == 9  # ceil(0.9 * 10) = 9th smallest
    assert stats.p90(list(range(1, 12))) == 10  # ceil(9.9) = 10th
    assert stats.mean([1, 2]) == 2 and stats.mean([1, 1, 2]) == 1  # halves round up
