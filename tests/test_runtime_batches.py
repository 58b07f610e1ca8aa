"""Several operations applied at once and committed as one job (a device line's burst of keys):
each is applied and refused on its own, and what is on disk is what memory says."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.config import HallConfig
from edge.domain.errors import DomainError
from edge.domain.queue import Hall
from edge.runtime import HallRuntime


def states(h: Hall) -> dict[str, tuple[str, int | None]]:
    return {t.number: (t.state.value, t.window) for t in h.tickets.values()}


def reopened(rt: HallRuntime, cfg: HallConfig, clock: FakeClock, data: Path) -> Hall:
    rt.close()
    again = HallRuntime.open(cfg, data, clock=clock)
    try:
        return again.hall
    finally:
        again.close()


def test_a_burst_is_applied_in_order_each_refused_alone_and_committed_together(
        hall_config: HallConfig, clock: FakeClock, tmp_path: Path) -> None:
    rt = HallRuntime.open(hall_config, tmp_path / "data", clock=clock)
    rt.tick()
    rt.execute(lambda h: h.issue("SHMS"))
    rt.execute(lambda h: (None, h.login("S001", 1)))
    rt.execute(lambda h: (None, h.login("S002", 2)))
    head = rt.store.head_seq
    results, done = rt.submit_each([
        lambda h: h.call_next(1),
        lambda h: (None, h.no_show(3)),  # nobody at window 3: refused, the rest go on
        lambda h: h.call_next(2),  # nothing left: not an error, None
        lambda h: h.issue("SHMS"),
    ])
    called, refused, empty, issued = results
    assert called is not None and called.number == "A001"
    assert isinstance(refused, DomainError) and refused.code == "window-not-logged-in"
    assert empty is None
    assert issued.number == "A002"
    sealed = done.wait()
    assert [e["type"] for e in sealed] == ["ticket.called", "ticket.issued"]
    assert [e["seq"] for e in sealed] == [head + 1, head + 2]
    memory = states(rt.hall)
    assert memory == {"A001": ("called", 1), "A002": ("waiting", None)}
    assert states(reopened(rt, hall_config, clock, tmp_path / "data")) == memory


def test_an_unexpected_error_keeps_the_operations_before_it_and_applies_none_after(
        hall_config: HallConfig, clock: FakeClock, tmp_path: Path) -> None:
    rt = HallRuntime.open(hall_config, tmp_path / "data", clock=clock)
    rt.tick()

    def half_done(h: Hall) -> tuple[None, list[object]]:
        t = h.ticket("A001")
        t.window = 7  # memory changed, then a bug: this must not reach the disk
        h.dirty.tickets[t.id] = t
        raise RuntimeError("a bug midway")

    results, done = rt.submit_each([
        lambda h: h.issue("SHMS"),
        half_done,
        lambda h: h.issue("ZCDJ"),
    ])
    assert results[0].number == "A001"
    assert isinstance(results[1], RuntimeError) and results[2] is results[1]
    assert [e["type"] for e in done.wait()] == ["ticket.issued"]
    rt.store.flush()
    # Memory went back to the disk: the first ticket as issued, the bug's change gone, the
    # operation after it never applied.
    assert states(rt.hall) == {"A001": ("waiting", None)}
    assert states(reopened(rt, hall_config, clock, tmp_path / "data")) == {
        "A001": ("waiting", None)}


def test_a_burst_of_refusals_only_commits_nothing(runtime: HallRuntime) -> None:
    head = runtime.store.head_seq
    results, done = runtime.submit_each([lambda h: (None, h.no_show(1)),
                                         lambda h: (None, h.finish(2))])
    assert all(isinstance(r, DomainError) for r in results)
    assert done.wait() == []
    runtime.store.flush()
    assert runtime.store.head_seq == head


@pytest.mark.parametrize("n", [1, 50])
def test_a_burst_of_calls_is_on_disk_as_in_memory(hall_config: HallConfig, clock: FakeClock,
                                                  tmp_path: Path, n: int) -> None:
    rt = HallRuntime.open(hall_config, tmp_path / "data", clock=clock)
    rt.tick()
    for _ in range(n):
        rt.execute(lambda h: h.issue("GA"))
    rt.execute(lambda h: (None, h.login("S008", 8)))
    rt.execute(lambda h: (None, h.login("S009", 9)))
    for _ in range(n):
        results, done = rt.submit_each([lambda h: h.call_next(8), lambda h: h.call_next(9)])
        done.wait()
        ends = [lambda h, w=w: (None, h.start(w) + h.finish(w))
                for w, r in zip((8, 9), results, strict=True) if r is not None]
        rt.submit_each(ends)[1].wait()
    memory = states(rt.hall)
    assert sum(1 for s, _w in memory.values() if s == "finished") == n
    assert states(reopened(rt, hall_config, clock, tmp_path / "data")) == memory


def test_a_bug_in_one_operation_does_not_make_memory_forget_the_ones_queued_before(
        hall_config: HallConfig, clock: FakeClock, tmp_path: Path) -> None:
    rt = HallRuntime.open(hall_config, tmp_path / "data", clock=clock)
    rt.tick()
    for _ in range(20):
        rt.submit(lambda h: h.issue("SHMS"))  # queued, not waited for

    def bug(h: Hall) -> tuple[None, list[object]]:
        h.ticket("A001").window = 9
        raise RuntimeError("a bug midway")

    with pytest.raises(RuntimeError):
        rt.submit(bug)
    memory = states(rt.hall)
    assert len(memory) == 20 and memory["A001"] == ("waiting", None)
    assert states(reopened(rt, hall_config, clock, tmp_path / "data")) == memory
