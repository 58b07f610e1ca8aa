"""End to end through the simulators: every assertion reads bytes the devices received."""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.keypad import KeypadDriver
from drivers.protocols import keypad as kp
from drivers.sim.harness import KIOSK, running_hall


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


def test_keys_read_in_one_go_are_each_answered_on_their_own(tmp_path: Path) -> None:
    """Three CALLs in one write reach the box in one read and are committed together: the
    one that calls someone is acknowledged OK once on disk, a window nobody staffs is refused,
    a window with nobody left to call is told so, and only the first is on the record."""
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            pads, boards = hall.keypads, hall.boards
            await hall.take_ticket("ZCDJ")
            assert await pads.key(3, kp.Func.KEY_LOGIN, b"S003:8003") == kp.AckStatus.OK
            assert await pads.key(4, kp.Func.KEY_LOGIN, b"S004:8004") == kp.AckStatus.OK
            before = {a: len(pads.acks[a]) for a in (3, 4, 5)}
            pads.port.write(b"".join(kp.encode(kp.KeypadFrame(a, kp.Func.KEY_CALL, b""))
                                     for a in (3, 5, 4)))

            async def answered() -> None:
                while any(len(pads.acks[a]) <= n for a, n in before.items()):
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(answered(), 5)
            status = {a: pads.acks[a][before[a]] for a in before}
            assert status == {3: (kp.Func.KEY_CALL, kp.AckStatus.OK),
                              5: (kp.Func.KEY_CALL, kp.AckStatus.REFUSED),
                              4: (kp.Func.KEY_CALL, kp.AckStatus.REFUSED)}
            await boards.wait_shown(3, "B001 请到3号窗口")
            t = hall.rt.hall.ticket("B001")
            assert t.state == "called" and t.window == 3
            called = hall.rt.store.events_after(0, 1000, ["ticket.called"])
            assert [(e["data"]["number"], e["data"]["window"]) for e in called] == [("B001", 3)]
            kd = hall.component(KeypadDriver)
            assert kd.last_error == {5: "window-not-logged-in", 4: "empty"}

    asyncio.run(go())


def test_keypad_runs_a_window_alone_and_ignores_noise(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            pads, boards = hall.keypads, hall.boards
            await hall.take_ticket("ZCDJ")
            # Wrong PIN: refused, nobody logged in.
            assert await pads.key(4, kp.Func.KEY_LOGIN, b"S004:0000") == kp.AckStatus.REFUSED
            assert hall.rt.hall.windows[4].staff is None
            assert await pads.key(4, kp.Func.KEY_LOGIN, b"S004:8004") == kp.AckStatus.OK
            # Line noise and a frame for an address that is no keypad (an evaluator, say)
            # change nothing and get no answer; the next key still works.
            pads.port.write(b"\x00\xff\x68\x68garbage\x16" + kp.encode(
                kp.KeypadFrame(77, kp.Func.RATING, b"\x01")))
            assert await pads.key(4, kp.Func.KEY_CALL) == kp.AckStatus.OK
            assert 77 not in pads.acks
            await boards.wait_shown(4, "B001 请到4号窗口")
            assert await pads.key(4, kp.Func.KEY_START) == kp.AckStatus.OK
            assert hall.rt.hall.ticket("B001").state == "serving"
            # Transfer to 经营许可: a new number in that queue, the window is free again.
            assert await pads.key(4, kp.Func.KEY_TRANSFER, b"JYXK") == kp.AckStatus.OK
            moved = hall.rt.hall.tickets["20261123-B001"]
            assert moved.state == "transferred" and moved.transferred_to
            await boards.wait_shown(4, "欢迎光临")
            # The transferred applicant is called at the same window (it serves JYXK too).
            assert await pads.key(4, kp.Func.KEY_CALL) == kp.AckStatus.OK
            assert await pads.key(4, kp.Func.KEY_RECALL) == kp.AckStatus.OK
            assert await pads.key(4, kp.Func.KEY_NO_SHOW) == kp.AckStatus.OK
            assert await pads.key(4, kp.Func.KEY_TRANSFER, b"NOPE") == kp.AckStatus.REFUSED
            assert await pads.key(4, kp.Func.KEY_LOGOUT) == kp.AckStatus.OK
            await pads.wait_display(4, lambda d: d[2] == "OFF")
            # A transferred ticket is handed over at the window, not printed at the kiosk.
            assert len(hall.printer.tickets) == 1
            kd = hall.component(KeypadDriver)
            assert kd.foreign >= 1 and kd.decoders["rs485-keypads"].stats.garbage_bytes > 0

    asyncio.run(go())


def test_kiosk_without_printer_notice_when_no_printers(tmp_path: Path) -> None:
    from drivers.sim.harness import example_config

    async def go() -> None:
        async with running_hall(tmp_path, example_config(printers=[])) as hall:
            t = await hall.take_ticket("SHMS")
            assert "printer" not in t

    asyncio.run(go())


def test_each_kiosk_prints_on_its_own_printer(tmp_path: Path) -> None:
    from drivers.sim.harness import example_config

    async def go() -> None:
        base = example_config()
        assert base.devices is not None
        own = base.devices.printers[0]
        default = own.model_copy(update={"id": "printer-hall", "kiosk": None, "qr": "image"})
        cfg = example_config(printers=[own, default])
        async with running_hall(tmp_path, cfg) as hall:
            sims = {s.device_id: s for s in hall.sims if hasattr(s, "decoder")
                    and hasattr(s, "paper_end")}
            t = await hall.take_ticket("SHMS")  # with the kiosk-1 token
            assert t["printer"]["printer"] == "printer-kiosk-1"
            r = await hall.client.post("/api/v1/tickets", json={"service": "SHMS"})
            assert r.status_code == 201
            assert r.json()["printer"]["printer"] == "printer-hall"
            await sims["printer-kiosk-1"].wait_ticket(1)
            await sims["printer-hall"].wait_ticket(1)
            assert "A002" in sims["printer-hall"].text().replace(" ", "")
            # The default printer has no native QR: the code comes as a raster image.
            assert "[image" in sims["printer-hall"].text()
            assert len(sims["printer-kiosk-1"].tickets) == 1

    asyncio.run(go())


def test_new_day_clears_boards_and_keypads(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            await hall.take_ticket("RS")
            assert await hall.keypads.key(10, kp.Func.KEY_LOGIN, b"S010:8010") == 0
            assert await hall.keypads.key(10, kp.Func.KEY_CALL) == 0
            await hall.boards.wait_shown(10, "F001 请到10号窗口")
            hall.rt.clock.advance(hours=24)  # type: ignore[attr-defined]
            hall.rt.tick()
            await hall.boards.wait_shown(10, "欢迎光临")
            await hall.boards.wait_shown(100, "天河区政务服务中心 欢迎您")
            await hall.keypads.wait_display(10, lambda d: d[2] == "OFF" and d[1] == "")

    asyncio.run(go())


def test_one_silent_bx5_board_is_grade_c_and_others_run_on(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            boards = hall.boards
            boards.dead.add(2)  # board-w2's controller fails; the line is fine
            await hall.login("S001", 1)
            await hall.login("S002", 2)
            await hall.take_ticket("SHMS")
            await hall.take_ticket("SHMS")
            hall.rt.execute(lambda h: h.call_next(2))
            hall.rt.execute(lambda h: h.call_next(1))
            await boards.wait_shown(1, "A002 请到1号窗口")
            loop = asyncio.get_running_loop()
            end = loop.time() + 6
            while loop.time() < end and hall.rt.health.current["board-w2"].grade != "C":
                await asyncio.sleep(0.05)
            h = hall.rt.health.current["board-w2"]
            assert (h.online, h.grade, h.detail) == (True, "C", "controller does not answer")
            assert hall.rt.health.current["board-w1"].grade is None
            # The controller is replaced: its next answer clears the fault.
            boards.dead.discard(2)
            hall.rt.execute(lambda h: (None, h.no_show(2)))
            end = loop.time() + 6
            while loop.time() < end and hall.rt.health.current["board-w2"].grade is not None:
                await asyncio.sleep(0.05)
            assert hall.rt.health.current["board-w2"].grade is None

    asyncio.run(go())


def test_appointment_check_in_prints_with_its_note(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            r = await hall.client.post(
                "/api/v1/appointments", headers={"Authorization": "Bearer demo-manager-token"},
                json={"code": "APP-0001", "service": "SW",
                      "slot_start": "2026-11-23T09:10:00+08:00",
                      "slot_end": "2026-11-23T09:30:00+08:00"})
            assert r.status_code == 201, r.text
            r = await hall.client.post("/api/v1/appointments/APP-0001/check-in",
                                       headers=KIOSK)
            assert r.status_code == 201, r.text
            assert r.json()["printer"]["printed"] is True
            await hall.printer.wait_ticket(1)
            assert "【预约】" in hall.printer.text()

    asyncio.run(go())


def test_central_notice_shows_on_the_boards_then_reverts(tmp_path: Path) -> None:
    """display.message (the central room's cmd/display.message journals it) reaches the boards:
    shown for its time, then the board's own text again; a call at a window takes precedence."""
    from edge.domain.model import DomainEvent

    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            notice = {"command_id": "c-1", "text": "今日系统维护 16:00 停止取号", "seconds": 5,
                      "target": "main"}
            hall.rt.emit([DomainEvent("display.message", notice)])
            await hall.boards.wait_shown(100, notice["text"])
            assert hall.boards.shown.get(10) != notice["text"]  # only the main board
            await hall.boards.wait_shown(100, "天河区政务服务中心 欢迎您", timeout=10)
            hall.rt.emit([DomainEvent("display.message", dict(notice, target=10,
                                                              text="请注意"))])
            await hall.boards.wait_shown(10, "请注意")
            await hall.take_ticket("RS")
            assert await hall.keypads.key(10, kp.Func.KEY_LOGIN, b"S010:8010") == 0
            assert await hall.keypads.key(10, kp.Func.KEY_CALL) == 0
            await hall.boards.wait_shown(10, "F001 请到10号窗口")
            await asyncio.sleep(5.5)  # the notice's time ran out: the call stays
            assert hall.boards.shown[10] == "F001 请到10号窗口"

    asyncio.run(go())


def test_managers_notice_shows_on_the_led_boards_until_taken_down(tmp_path: Path) -> None:
    """The manager's notice (POST /api/v1/board/notice) reaches the LED boards like the central
    room's; taken down (DELETE) before its time, the board shows its own text again."""
    manager = {"Authorization": "Bearer demo-manager-token"}

    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            r = await hall.client.post("/api/v1/board/notice", headers=manager,
                                       json={"text": "下午请到二楼办理社保", "seconds": 3600})
            assert r.status_code == 201, r.text
            await hall.boards.wait_shown(100, "下午请到二楼办理社保")
            assert hall.boards.shown.get(10) != "下午请到二楼办理社保"  # only the main board
            r = await hall.client.delete("/api/v1/board/notice", headers=manager)
            assert r.status_code == 200, r.text
            await hall.boards.wait_shown(100, "天河区政务服务中心 欢迎您", timeout=10)
            hall.rt.store.flush()
            types = [e["type"] for e in hall.rt.store.events_after(0, 10**9, [
                "display.message", "display.cleared"])]
            assert types == ["display.message", "display.cleared"]

    asyncio.run(go())
