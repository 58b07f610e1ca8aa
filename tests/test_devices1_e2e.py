"""End to end through the simulators: every assertion reads bytes the devices received."""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.protocols import keypad as kp
from drivers.sim.harness import running_hall


def test_kiosk_ticket_prints_chinese_text_and_qr(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            t = await hall.take_ticket("SHMS")
            assert t["number"] == "A001"
            assert t["printer"]["printed"] is True, t["printer"]
            await hall.printer.wait_ticket(1)
            text = hall.printer.text()
            for part in ("天河区政务服务中心", "社会民生", "A 0 0 1", "您前面还有 0 人",
                         "请留意叫号，过号请重新取号", "2026-11-23 09:00"):
                assert part in text, f"{part!r} not on the ticket:\n{text}"
            assert hall.printer.qr() == f"https://zwfw.example.gov.cn/q/{t['id']}"
            assert hall.printer.decoder.stats.bad_text == 0
            t2 = await hall.take_ticket("SHMS")
            await hall.printer.wait_ticket(2)
            assert "您前面还有 1 人" in hall.printer.text(), hall.printer.text()
            assert t2["number"] == "A002"

    asyncio.run(go())


def test_paper_end_kiosk_says_photograph_and_ticket_is_issued(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            hall.printer.paper_end = True
            t = await hall.take_ticket("GA")
            assert t["number"] == "E001"
            p = t["printer"]
            assert p["printed"] is False and p["status"] == "paper_end"
            assert "请拍照保存屏幕上的号码" in p["message"]
            assert hall.printer.tickets == []
            # Issued all the same: it is in the journal and the queue.
            issued = hall.events("ticket.issued")
            assert [e["data"]["number"] for e in issued] == ["E001"]
            assert hall.rt.hall.ticket("E001").state == "waiting"
            health = hall.rt.health.current["printer-kiosk-1"]
            assert (health.online, health.grade) == (True, "B")
            # Paper in again: near end prints, grade C.
            hall.printer.paper_end = False
            hall.printer.near_end = True
            t = await hall.take_ticket("GA")
            assert t["printer"]["printed"] is True
            assert t["printer"]["status"] == "paper_near_end"
            await hall.printer.wait_ticket(1)
            assert "E002" in hall.printer.text().replace(" ", "")
            assert hall.rt.health.current["printer-kiosk-1"].grade == "C"
            # Cover open is grade B too.
            hall.printer.near_end = False
            hall.printer.cover_open = True
            t = await hall.take_ticket("GA")
            assert t["printer"]["status"] == "cover_open" and not t["printer"]["printed"]

    asyncio.run(go())


def test_keypad_call_shows_on_window_and_main_board(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            pads, boards = hall.keypads, hall.boards
            # Window 8 (公安, an "@" board) and window 3 (注册登记, a BX-5 board).
            await hall.take_ticket("GA")
            await hall.take_ticket("ZCDJ")
            assert await pads.key(8, kp.Func.KEY_LOGIN, b"S008:8008") == kp.AckStatus.OK
            assert await pads.key(3, kp.Func.KEY_LOGIN, b"S003:8003") == kp.AckStatus.OK
            assert await pads.key(8, kp.Func.KEY_CALL) == kp.AckStatus.OK
            await boards.wait_shown(8, "E001 请到8号窗口")
            await boards.wait_shown(100, "请E001号到8号窗口办理")
            await pads.wait_display(8, lambda d: d[1] == "E001")
            assert await pads.key(3, kp.Func.KEY_CALL) == kp.AckStatus.OK
            await boards.wait_shown(3, "B001 请到3号窗口")
            await boards.wait_shown(100, "请B001号到3号窗口办理  请E001号到8号窗口办理")
            # Nothing more waiting at window 8: finish, then call is refused, not an error.
            assert await pads.key(8, kp.Func.KEY_FINISH) == kp.AckStatus.OK
            assert hall.rt.hall.ticket("E001").state == "finished"
            await boards.wait_shown(8, "欢迎光临")
            assert await pads.key(8, kp.Func.KEY_CALL) == kp.AckStatus.REFUSED
            # Pause and resume from the keypad.
            assert await pads.key(8, kp.Func.KEY_PAUSE) == kp.AckStatus.OK
            await boards.wait_shown(8, "暂停服务")
            await pads.wait_display(8, lambda d: d[2] == "PAUSE")
            assert await pads.key(8, kp.Func.KEY_PAUSE) == kp.AckStatus.OK
            await boards.wait_shown(8, "欢迎光临")
            assert boards.wrong_protocol == 0 and boards.unknown_address == 0

    asyncio.run(go())
