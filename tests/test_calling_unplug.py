"""Unplug/replug: closing a simulator's pty master is pulling the cable; plugging makes a new
/dev/pts node behind the same symlink. 20 cycles per device class; each replug must be back
within 2 s (a generous liveness bound) and the device must work again through its bytes."""

from __future__ import annotations

import asyncio
import os
import pty
from pathlib import Path

from drivers.protocols import keypad as kp
from drivers.sim.harness import running_hall
from tests.waiting import poll as _until

CYCLES = 20
RECOVER_S = 2.0




def _health(hall, device: str) -> tuple[bool, str | None]:
    h = hall.rt.health.current[device]
    return h.online, h.grade


def test_printer_unplug_replug_20_cycles(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            sim = hall.printer
            link = hall.links()[0]
            nodes = set()
            for i in range(CYCLES):
                await sim.unplug()
                assert await _until(lambda: not link.online, 2.0)
                assert _health(hall, "printer-kiosk-1") == (False, "B")
                # Tickets are still issued while the printer is away; the kiosk is told.
                t = await hall.take_ticket("SHMS")
                assert t["printer"]["printed"] is False
                assert t["printer"]["status"] == "offline"
                # Take the freed /dev/pts number on odd cycles, so the replugged device
                # comes back on a different node, as a USB adapter may.
                squat = pty.openpty() if i % 2 else None
                await sim.plug()
                nodes.add(sim.port.slave_name)
                if squat:
                    os.close(squat[0])
                    os.close(squat[1])
                assert await _until(lambda: link.online, RECOVER_S), f"cycle {i}: not back"
                assert await _until(lambda: _health(hall, "printer-kiosk-1")[0], 1.0)
                t = await hall.take_ticket("SHMS")
                assert t["printer"]["printed"] is True, (i, t["printer"])
                await sim.wait_ticket(i + 1)
                assert t["number"] in sim.text().replace(" ", "")
            assert len(nodes) > 1  # the driver really followed new /dev/pts nodes
            offline = [e for e in hall.events("device.health")
                       if e["data"]["device"] == "printer-kiosk-1" and not e["data"]["online"]]
            assert len(offline) == CYCLES

    asyncio.run(go())


def test_network_printer_unplug_replug(tmp_path: Path) -> None:
    from drivers.sim.harness import example_config

    async def go() -> None:
        cfg = example_config()
        assert cfg.devices is not None
        p = cfg.devices.printers[0].model_copy(update={"port": "tcp://127.0.0.1:9100"})
        cfg = cfg.model_copy(update={"devices": cfg.devices.model_copy(
            update={"printers": [p]})})
        async with running_hall(tmp_path, cfg) as hall:
            sim = hall.printer
            assert sim.tcp
            link = hall.links()[0]
            for i in range(5):
                await sim.unplug()
                assert await _until(lambda: not link.online, 2.0), i
                await sim.plug()
                assert await _until(lambda: link.online, RECOVER_S), i
                t = await hall.take_ticket("GA")
                assert t["printer"]["printed"] is True
                await sim.wait_ticket(i + 1)

    asyncio.run(go())


def test_board_bus_unplug_replug_20_cycles(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            sim = hall.boards
            link = next(x for x in hall.links() if x.name == "bus-rs485-boards")
            await hall.login("S008", 8)
            for i in range(CYCLES):
                sim.unplug()
                assert await _until(lambda: not link.online, 2.0)
                assert _health(hall, "board-w8") == (False, "B")
                assert _health(hall, "board-main") == (False, "B")
                # The queue goes on while the boards are dark.
                await hall.take_ticket("GA")
                t = hall.rt.execute(lambda h: h.call_next(8))
                sim.shown.clear()
                sim.plug()
                assert await _until(lambda: link.online, RECOVER_S), f"cycle {i}: not back"
                # On reconnect every board is sent its text again: the board is the truth.
                await sim.wait_shown(8, f"{t.number} 请到8号窗口", timeout=RECOVER_S)
                await sim.wait_shown(1, "欢迎光临", timeout=RECOVER_S)
                assert _health(hall, "board-w8") == (True, None)
                hall.rt.execute(lambda h: (None, h.no_show(8)))

    asyncio.run(go())


def test_keypad_bus_unplug_replug_20_cycles(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            sim = hall.keypads
            link = next(x for x in hall.links() if x.name == "bus-rs485-keypads")
            assert await sim.key(12, kp.Func.KEY_LOGIN, b"S012:8012") == kp.AckStatus.OK
            for i in range(CYCLES):
                sim.unplug()
                assert await _until(lambda: not link.online, 2.0)
                assert _health(hall, "keypad-w12") == (False, "B")
                await hall.take_ticket("SW")
                sim.plug()
                assert await _until(lambda: link.online, RECOVER_S), f"cycle {i}: not back"
                assert await sim.key(12, kp.Func.KEY_CALL) == kp.AckStatus.OK
                want = f"G{i + 1:03d}"
                await sim.wait_display(12, lambda d, w=want: d[1] == w)
                assert await sim.key(12, kp.Func.KEY_NO_SHOW) == kp.AckStatus.OK
                assert _health(hall, "keypad-w12") == (True, None)

    asyncio.run(go())
