"""4-key evaluators: real FF 68 frames on a pty → the mapped GB/T 39734 level."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import SharedBus
from drivers.evaluator import EvaluatorBusDriver
from drivers.protocols import keypad
from drivers.sim.evaluator_keys import EvaluatorKeysSim
from edge.domain.rating import FOUR_KEY, LEVEL_NAMES
from tests.supervision_fixtures import check_schema, journal, serve_ticket
from tests.waiting import until


class Rig:
    """The simulated line, the shared bus and the evaluator driver on it."""

    def __init__(self, sim: EvaluatorKeysSim, bus: SharedBus, drv: EvaluatorBusDriver) -> None:
        self.sim, self.bus, self.drv = sim, bus, drv

    async def stop(self) -> None:
        await self.drv.stop()
        await self.bus.stop()
        await self.sim.stop()


async def rig(rt, svc, tmp_path) -> tuple[EvaluatorKeysSim, Rig]:
    evals = [e for e in rt.config.devices.evaluators if e.kind == "keypad"]
    assert [e.address for e in evals] == [113, 114]
    sim = EvaluatorKeysSim(tmp_path / "rs485-eval", [113, 114])
    await sim.start()
    bus = SharedBus("rs485-eval", sim.endpoint, 9600)
    drv = EvaluatorBusDriver(rt, bus, evals, svc)
    await drv.start()
    await bus.start()
    assert await bus.link.wait_online(10)
    return sim, Rig(sim, bus, drv)


def funcs(sim: EvaluatorKeysSim, addr: int) -> list[tuple[int, bytes]]:
    return [(f.func, f.data) for f in sim.received[addr]]


def test_key_mapping_matches_the_keypad_codec():
    assert {k: lv.value for k, lv in FOUR_KEY.items()} == keypad.RATINGS


@pytest.mark.parametrize("key", [1, 2, 3, 4])
def test_a_key_frame_gives_the_mapped_level(runtime, services, tmp_path, key):
    rt = runtime

    async def scenario() -> EvaluatorKeysSim:
        sim, hw = await rig(rt, services.ratings, tmp_path)
        try:
            serve_ticket(rt, 13, "S013")
            await until(lambda: any(f == keypad.Func.RATE_PROMPT for f, _ in funcs(sim, 113)))
            sim.press(113, key)
            await until(lambda: any(f == keypad.Func.RATE_DONE for f, _ in funcs(sim, 113)))
        finally:
            await hw.stop()
        return sim

    sim = asyncio.run(scenario())
    [ev] = journal(rt, "rating.submitted")
    assert ev["data"]["level"] == FOUR_KEY[key].value
    assert ev["data"]["level_name"] == LEVEL_NAMES[FOUR_KEY[key]]
    assert ev["data"]["channel"] == "keypad" and ev["data"]["device"] == "eval-w13"
    assert ev["data"]["window"] == 13 and ev["data"]["staff"] == "S013"
    assert ev["data"]["follow_up"] is (key == 4)
    check_schema(ev)
    got = funcs(sim, 113)
    prompt = next(d for f, d in got if f == keypad.Func.RATE_PROMPT)
    assert prompt == ev["data"]["number"].encode()
    assert (keypad.Func.ACK, bytes([keypad.Func.RATING, keypad.AckStatus.OK])) in got
    assert (keypad.Func.RATE_DONE, bytes([key])) in got


def test_refusals_bad_keys_and_unknown_addresses(runtime, services, tmp_path):
    rt = runtime
    ack = keypad.Func.ACK

    async def scenario() -> EvaluatorKeysSim:
        sim, hw = await rig(rt, services.ratings, tmp_path)
        try:
            rt.execute(lambda h: (None, h.login("S014", 14)))
            sim.press(114, 1)  # nothing was asked at window 14
            await until(lambda: len(sim.received[114]) >= 1)
            sim.press(114, 9)  # no such key
            await until(lambda: len(sim.received[114]) >= 2)
            sim.addresses.add(77)  # a device the config does not know
            sim.received[77] = []
            sim.press(77, 1)
            await until(lambda: len(sim.received[77]) >= 1)
            serve_ticket(rt, 14, "S014")
            await until(lambda: any(f == keypad.Func.RATE_PROMPT for f, _ in funcs(sim, 114)))
            sim.press(114, 2)
            sim.press(114, 1)  # pressed twice: the second is a second rating
            await until(lambda: sum(f == ack for f, _ in funcs(sim, 114)) >= 4)
        finally:
            await hw.stop()
        return sim

    sim = asyncio.run(scenario())
    acks = [d[1] for f, d in funcs(sim, 114) if f == ack]
    assert acks == [keypad.AckStatus.REFUSED, keypad.AckStatus.BAD_DATA, keypad.AckStatus.OK,
                    keypad.AckStatus.REFUSED]
    assert [d[1] for f, d in funcs(sim, 77) if f == ack] == [keypad.AckStatus.NOT_CONFIGURED]
    rules = [e["data"]["rule"] for e in journal(rt, "rating.rejected")]
    assert rules == ["no-request", "already-rated"]
    [ok] = journal(rt, "rating.submitted")
    assert ok["data"]["level"] == "satisfied"


def test_unplug_replug_20_cycles(runtime, services, tmp_path):
    rt = runtime

    async def scenario() -> None:
        sim, hw = await rig(rt, services.ratings, tmp_path)
        try:
            for _ in range(20):
                sim.unplug()
                await until(lambda: not hw.bus.link.online)
                sim.plug()
                assert await hw.bus.link.wait_online(10)  # recovers within 10 s
            serve_ticket(rt, 13, "S013")
            await until(lambda: any(f == keypad.Func.RATE_PROMPT for f, _ in funcs(sim, 113)))
            sim.press(113, 3)
            await until(lambda: len(journal(rt, "rating.submitted")) == 1)
        finally:
            await hw.stop()

    asyncio.run(scenario())
    ev = [e["data"] for e in journal(rt, "device.health") if e["data"]["device"] == "eval-w13"]
    assert [e["online"] for e in ev].count(False) >= 20 and ev[-1]["online"] is True
    assert journal(rt, "rating.submitted")[0]["data"]["level_name"] == "基本满意"
