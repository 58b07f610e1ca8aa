"""The pages in real Chromium (Debian's, through Playwright) against a real box with simulated
devices, opened at a non-secure origin as on a hall LAN (http://hall.test:PORT). Every test
fails on a request leaving the box or a console error. Screenshots: test-artifacts/pages/."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pages_box import CHROMIUM, CHROMIUM_ARGS, PageBox, Watch

pw = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (make test installs it)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "pages"
KIOSK_TOKEN = "demo-kiosk-token"
MANAGER_TOKEN = "demo-manager-token"
DOWN = (r"net::ERR_|WebSocket connection to .* failed|status of 50\d|"
        r"ERR_INCOMPLETE_CHUNKED_ENCODING")
expect = pw.expect


@pytest.fixture
def box(tmp_path: Path) -> Iterator[PageBox]:
    b = PageBox(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def watch(box: PageBox) -> Iterator[Watch]:
    w = Watch(box.port)
    yield w
    w.check()


def open_page(chromium: Any, watch: Watch, box: PageBox | str, path: str, width: int,
              height: int, storage: dict[str, Any] | None = None) -> Any:
    """A page in its own browser context (a device of its own), at the box or a base URL."""
    ctx = chromium.new_context(viewport={"width": width, "height": height}, locale="zh-CN",
                               timezone_id="Asia/Shanghai")
    if storage:
        # A device paired earlier: what its page keeps in localStorage.
        import json

        script = "".join(f"localStorage.setItem({json.dumps('hallbox.' + k)}, "
                         f"{json.dumps(json.dumps(v))});" for k, v in storage.items())
        ctx.add_init_script(script)
    if isinstance(box, PageBox):
        # The page's clock shows the box's (fake) day, as on a real box where both agree.
        ctx.clock.install(time=box.clock.now())
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    watch.attach(page)
    page.goto((box.base if isinstance(box, PageBox) else box) + path)
    return page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def api(box: PageBox) -> httpx.Client:
    """The box's API from the test, as the hall's kiosk by default (a paired kiosk is not held
    to the anonymous per-address ticket limit); calls pass their own token where needed."""
    return httpx.Client(base_url=f"http://127.0.0.1:{box.port}", timeout=10,
                        headers={"authorization": f"Bearer {KIOSK_TOKEN}"})


def staff_login(page: Any, window: int, staff: str, pin: str) -> None:
    page.select_option("#window", str(window))
    page.fill("#staff", staff)
    page.fill("#pin", pin)
    page.click("#loginBtn")


def test_journey_kiosk_staff_board_evaluator_dashboard(box: PageBox, chromium: Any,
                                                       watch: Watch) -> None:
    dash = open_page(chromium, watch, box, "/dashboard", 1600, 1000)
    dash.fill("#token", MANAGER_TOKEN)
    dash.click("#loginBtn")
    expect(dash.locator("#satisfaction")).to_have_text("—")

    board = open_page(chromium, watch, box, "/board", 1920, 1080)
    expect(board.locator("#latestNumber")).to_have_text("欢迎光临")

    # Kiosk: pair it (hold the hall name), then take a ticket with a touch.
    kiosk = open_page(chromium, watch, box, "/", 1920, 1080)
    expect(kiosk.locator(".svc")).to_have_count(7)
    hall = kiosk.locator("#hall").bounding_box()
    kiosk.mouse.move(hall["x"] + 20, hall["y"] + 10)
    kiosk.mouse.down()
    kiosk.wait_for_timeout(3300)
    kiosk.mouse.up()
    kiosk.fill("#pair-token", KIOSK_TOKEN)
    kiosk.click("#pair-go")
    expect(kiosk.locator("#device")).to_have_text("取号机 kiosk-1")
    shot(kiosk, "kiosk")
    kiosk.click(".svc[data-service=SHMS]")
    expect(kiosk.locator("#ticket-number")).to_have_text("A001")
    expect(kiosk.locator("#ticket")).to_contain_text("号票正在打印")
    expect(kiosk.locator("#ticket img")).to_have_js_property("complete", True)
    assert kiosk.locator("#ticket img").evaluate("i => i.naturalWidth") > 0
    shot(kiosk, "kiosk-ticket")
    # More of the day, for the board's queue and the dashboard's charts.
    with api(box) as c:
        for svc in ("SHMS", "ZCDJ", "ZCDJ", "GA", "RS"):
            assert c.post("/api/v1/tickets", json={"service": svc}).status_code == 201
    box.advance(minutes=7)

    staff = open_page(chromium, watch, box, "/staff", 1366, 768)
    staff_login(staff, 1, "S001", "8001")
    expect(staff.locator("#who")).to_contain_text("王芳")
    expect(staff.locator("#waiting")).to_contain_text("A001")
    staff.keyboard.press("n")  # 呼叫下一位
    expect(staff.locator("#curNumber")).to_have_text("A001")
    expect(staff.locator("#toast")).to_have_text("已呼叫 A001")

    expect(board.locator("#latestNumber")).to_have_text("A001")
    expect(board.locator("#latestWhere")).to_contain_text("社会民生 1号窗")
    shot(board, "board")

    tablet = open_page(chromium, watch, box, "/evaluator", 1280, 800)
    expect(tablet.locator("#pair")).to_be_visible()
    assert "token" not in tablet.url
    tablet.fill("#pairWindow", "1")
    tablet.fill("#pairToken", "demo-evaluator-1")
    tablet.click("#pairGo")
    expect(tablet.locator("#staffName")).to_have_text("王芳")
    assert "demo-evaluator-1" not in tablet.url
    shot(tablet, "evaluator-idle")

    staff.keyboard.press("s")  # 开始办理
    expect(staff.locator("#state")).to_have_text("办理中")
    shot(staff, "staff")
    box.advance(minutes=4)
    staff.keyboard.press("f")  # 办结: the box asks the tablet for a rating by itself
    expect(staff.locator("#toast")).to_have_text("A001 已办结")
    expect(tablet.locator("#rateNumber")).to_have_text("A001")
    shot(tablet, "evaluator-rate")
    # Asking again is refused; the console says why, in Chinese.
    with watch.tolerate(r"status of 409"):
        staff.keyboard.press("e")
        expect(staff.locator("#toast")).to_have_text("已请求评价，请等待办事人评价")
    expect(staff.locator("#toast")).to_have_class("bad")

    tablet.click("[data-level=dissatisfied]")
    expect(tablet.locator("#reasons")).to_be_visible()
    expect(tablet.locator("#reasonList button")).not_to_have_count(0)
    shot(tablet, "evaluator-reasons")
    tablet.click("#reasonBack")
    tablet.click("[data-level=satisfied]")
    expect(tablet.locator("#thanksSub")).to_have_text("您的评价：满意")
    expect(tablet.locator("#staffName")).to_have_text("王芳", timeout=10_000)  # back to idle

    # The dashboard follows the journal: the rating moves its satisfaction figure.
    expect(dash.locator("#satisfaction")).to_have_text("100%")
    expect(dash.locator("#kpi")).to_contain_text("约7分钟")
    expect(dash.locator("#windows")).to_contain_text("王芳")
    dash.fill("#q", "A001")
    dash.click("#qBtn")
    for step in ("取号", "叫号", "开始办理", "办结", "请求评价", "评价"):
        expect(dash.locator("#timeline")).to_contain_text(step)
    expect(dash.locator("#chartHour canvas")).to_have_count(1)
    shot(dash, "dashboard")
    assert box.hall is not None
    assert [e["data"]["level"] for e in box.hall.events("rating.submitted")] == ["satisfied"]


def test_refusals_show_their_message(box: PageBox, chromium: Any, watch: Watch) -> None:
    staff = open_page(chromium, watch, box, "/staff", 1366, 768)
    with watch.tolerate(r"status of 401"):
        staff_login(staff, 2, "S002", "0000")
        expect(staff.locator("#loginMsg")).to_have_text("工号或密码错误")
    shot(staff, "staff-login")
    staff_login(staff, 2, "S002", "8002")
    expect(staff.locator("#who")).to_contain_text("李娜")
    with watch.tolerate(r"status of 409"):
        staff.click("[data-act=recall]")
        expect(staff.locator("#toast")).to_have_text("当前没有正在呼叫或办理的号码")
    staff.keyboard.press("n")
    expect(staff.locator("#toast")).to_have_text("当前没有等候的号码")
    # Pause with a reason, then calling is refused until resumed.
    staff.keyboard.press("p")
    staff.click("#chooser button:has-text('午间休息')")
    staff.click("#choice-ok")
    expect(staff.locator("#state")).to_have_text("暂停服务（午间休息）")
    with watch.tolerate(r"status of 409"):
        staff.keyboard.press("n")
        expect(staff.locator("#toast")).to_have_text("窗口暂停服务中，请先恢复")
    shot(staff, "staff-refused")

    kiosk = open_page(chromium, watch, box, "/", 1920, 1080, {"kiosk.token": KIOSK_TOKEN})
    kiosk.click("#checkinBtn")
    for ch in "NOPE42":
        kiosk.click(f".keys button:text-is('{ch}')")
    with watch.tolerate(r"status of 404"):
        kiosk.click("#checkin-go")
        expect(kiosk.locator("#checkin-error")).to_have_text("预约码不存在，请核对后重新输入")
    shot(kiosk, "kiosk-checkin-refused")


def sensor_w1(h: Any) -> Any:
    from drivers.sim.r30x import R30xSim

    return next(s for s in h.sims if isinstance(s, R30xSim) and s.port.link_path.name == "fp-w1")


def enrol_s001(h: Any) -> None:
    """S001's finger in window 1's sensor library (page 7) and in the box's store."""
    from edge.store import Store

    sensor_w1(h).templates[7] = "S001-right-index"
    h.rt.store.write_sync(Store.remember_template("fp-w1", 7, "S001",
                                                  "2026-11-20T10:00:00+08:00"))


def test_staff_fingerprint_login(box: PageBox, chromium: Any, watch: Watch) -> None:
    """Window 1 has a sensor: on its paired console, a finger enrolled for S001 logs in, no
    PIN. The console is paired once with the device token the manager issued."""
    box.call(enrol_s001)
    box.call(lambda h: sensor_w1(h).place_finger("S001-right-index"))
    with api(box) as c:
        r = c.post("/api/v1/devices", headers={"authorization": f"Bearer {MANAGER_TOKEN}"},
                   json={"name": "console-w1", "kind": "console", "window": 1})
        assert r.status_code == 201, r.text
    staff = open_page(chromium, watch, box, "/staff", 1366, 768)
    expect(staff.locator("#fingerBtn")).to_be_hidden()  # not paired yet
    staff.click("#pairLink")
    staff.fill("#pair-token", r.json()["token"])
    staff.click("#pair-go")
    expect(staff.locator("#deviceInfo")).to_have_text("本机：console-w1（1号窗口）")
    expect(staff.locator("#window")).to_be_disabled()
    staff.click("#fingerBtn")
    expect(staff.locator("#who")).to_contain_text("王芳（S001）")
    expect(staff.locator("#winname")).to_have_text("社会民生 1号窗")


def test_spot_check_prompts_the_console_and_passes_by_finger(box: PageBox, chromium: Any,
                                                             watch: Watch) -> None:
    """随机抽查: the console of the checked window says so at once; the staff member's finger
    on the window's sensor passes it, and the console shows the result."""
    from concurrent.futures import ThreadPoolExecutor

    box.call(enrol_s001)
    staff = open_page(chromium, watch, box, "/staff", 1366, 768)
    staff_login(staff, 1, "S001", "8001")
    expect(staff.locator("#who")).to_contain_text("王芳")
    deadline = (box.clock.now() + timedelta(minutes=2)).isoformat()
    with api(box) as c, ThreadPoolExecutor(1) as pool:
        # The manager's request runs until the check ends (verified or past its deadline).
        check = pool.submit(c.post, "/api/v1/spotchecks", headers={
            "authorization": f"Bearer {MANAGER_TOKEN}"}, json={
            "window": 1, "deadline": deadline, "note": "上午例行抽查"}, timeout=60)
        expect(staff.locator("#spotcheck")).to_contain_text("电子监察室随机抽查")
        expect(staff.locator("#spotcheck")).to_contain_text("指纹仪")
        expect(staff.locator("#spotcheck")).to_contain_text("上午例行抽查")
        shot(staff, "staff-spotcheck")
        box.call(lambda h: sensor_w1(h).place_finger("S001-right-index"))
        expect(staff.locator("#spotcheck-result")).to_have_text("验证通过", timeout=30_000)
        r = check.result()
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "passed"
    staff.click("#spotcheck button:has-text('关闭')")
    expect(staff.locator("#spotcheck")).to_have_count(0)


def test_staff_console_actions(box: PageBox, chromium: Any, watch: Watch) -> None:

    with api(box) as c:
        for _ in range(3):
            assert c.post("/api/v1/tickets", json={"service": "ZCDJ"}).status_code == 201
    staff = open_page(chromium, watch, box, "/staff", 1366, 768)
    staff_login(staff, 4, "S004", "8004")
    expect(staff.locator("#waitingTotal")).to_have_text("3 人")
    # Out of order, with a reason for the journal.
    staff.locator("#waiting tr", has_text="B003").locator("button").click()
    staff.click("#chooser button:has-text('材料补正后回办')")
    staff.click("#choice-ok")
    expect(staff.locator("#curNumber")).to_have_text("B003")
    staff.keyboard.press("x")  # 未到
    expect(staff.locator("#noshows")).to_contain_text("B003")
    staff.locator("#noshows tr", has_text="B003").locator("button").click()  # 恢复排队
    expect(staff.locator("#waiting")).to_contain_text("B003")
    staff.keyboard.press("n")  # a reactivated ticket goes first
    expect(staff.locator("#curNumber")).to_have_text("B003")
    staff.keyboard.press("s")
    expect(staff.locator("#state")).to_have_text("办理中")
    staff.keyboard.press("f")
    expect(staff.locator("#curNumber")).to_have_text("无")
    staff.keyboard.press("n")
    expect(staff.locator("#curNumber")).to_have_text("B001")
    staff.keyboard.press("r")
    expect(staff.locator("#curInfo")).to_contain_text("已重呼 1 次")
    staff.keyboard.press("s")
    expect(staff.locator("#state")).to_have_text("办理中")
    staff.keyboard.press("t")  # 转移 to 经营许可
    staff.click("#chooser button:has-text('经营许可')")
    staff.click("#choice-ok")
    expect(staff.locator("#toast")).to_have_text("已转移，新号码 C001")
    expect(staff.locator("#curNumber")).to_have_text("无")
    assert box.hall is not None
    called = box.hall.events("ticket.called")
    assert called[0]["data"]["number"] == "B003"
    assert called[0]["data"]["reason"] == "材料补正后回办"
    # Today's counts for this window follow.
    expect(staff.locator("#counts")).to_contain_text("2已叫号")
    expect(staff.locator("#counts")).to_contain_text("1已办结")


def test_kiosk_appointment_check_in(box: PageBox, chromium: Any, watch: Watch) -> None:
    with api(box) as c:
        r = c.post("/api/v1/appointments", headers={"authorization": "Bearer demo-central-token"},
                   json={"code": "YY2026", "service": "JYXK",
                         "slot_start": "2026-11-23T09:00:00+08:00",
                         "slot_end": "2026-11-23T09:30:00+08:00"})
        assert r.status_code == 201, r.text
    kiosk = open_page(chromium, watch, box, "/", 1920, 1080, {"kiosk.token": KIOSK_TOKEN})
    kiosk.click("#checkinBtn")
    for ch in "YY2026":
        kiosk.click(f".keys button:text-is('{ch}')")
    expect(kiosk.locator("#checkin-code")).to_have_text("YY2026")
    shot(kiosk, "kiosk-checkin")
    kiosk.click("#checkin-go")
    expect(kiosk.locator("#ticket h2")).to_have_text("预约签到成功")
    expect(kiosk.locator("#ticket-number")).to_have_text("C001")


def test_kiosk_paper_out_says_photograph(box: PageBox, chromium: Any, watch: Watch) -> None:
    box.call(lambda h: setattr(h.printer, "paper_end", True))
    kiosk = open_page(chromium, watch, box, "/", 1920, 1080, {"kiosk.token": KIOSK_TOKEN})
    kiosk.click(".svc[data-service=GA]")
    expect(kiosk.locator("#ticket-number")).to_have_text("E001")
    expect(kiosk.locator("#printer-notice")).to_contain_text("请拍照保存屏幕上的号码")
    shot(kiosk, "kiosk-paper-out")
    assert box.hall is not None and box.hall.printer.tickets == []
    dash = open_page(chromium, watch, box, "/dashboard", 1600, 1000,
                     {"dashboard.token": MANAGER_TOKEN})
    expect(dash.locator("#devices tr", has_text="printer-kiosk-1")).to_contain_text("B故障")
    shot(dash, "dashboard-printer-fault")
    # 适老化 one touch away: larger, fewer choices.
    kiosk.click("#overlay .done")
    kiosk.click("#modeBtn")
    expect(kiosk.locator("body")).to_have_class("elder")
    expect(kiosk.locator("#checkinBtn")).to_be_hidden()
    shot(kiosk, "kiosk-elder")
    # Left alone, the kiosk goes back to its start screen for the next applicant.
    kiosk.click(".svc[data-service=RS]")
    expect(kiosk.locator("#ticket-number")).to_have_text("F001")
    kiosk.clock.fast_forward(46_000)
    expect(kiosk.locator("#overlay")).to_be_hidden()
    expect(kiosk.locator("body")).not_to_have_class("elder")
    # Locked down: no text selection, no way back.
    assert kiosk.evaluate("getComputedStyle(document.body).userSelect") == "none"
    url = kiosk.url
    kiosk.go_back()
    assert kiosk.url == url


def test_pages_recover_after_box_restart(box: PageBox, chromium: Any, watch: Watch) -> None:
    kiosk = open_page(chromium, watch, box, "/", 1920, 1080)
    board = open_page(chromium, watch, box, "/board", 1920, 1080)
    staff = open_page(chromium, watch, box, "/staff", 1366, 768)
    staff_login(staff, 3, "S003", "8003")
    expect(staff.locator("#who")).to_contain_text("张伟")
    tablet = open_page(chromium, watch, box, "/evaluator", 1280, 800,
                       {"evaluator": {"window": 3, "token": "demo-evaluator-3"}})
    expect(tablet.locator("#staffName")).to_have_text("张伟")
    dash = open_page(chromium, watch, box, "/dashboard", 1600, 1000,
                     {"dashboard.token": MANAGER_TOKEN})
    expect(dash.locator("#kpi")).to_contain_text("今日取号0")

    with watch.tolerate(DOWN):
        box.restart(downtime=1.5)
        with api(box) as c:
            t = c.post("/api/v1/tickets", json={"service": "ZCDJ"}).json()
        assert t["number"] == "B001"
        # Each page reconnects by itself and shows what happened after the restart.
        expect(kiosk.locator(".svc[data-service=ZCDJ] .meta b")).to_have_text("1", timeout=40_000)
        expect(dash.locator("#kpi")).to_contain_text("今日取号1", timeout=40_000)
        expect(staff.locator("#waiting")).to_contain_text("B001", timeout=40_000)
        expect(staff.locator("#offline")).to_be_hidden()
        staff.keyboard.press("n")
        expect(staff.locator("#curNumber")).to_have_text("B001")
        expect(board.locator("#latestNumber")).to_have_text("B001", timeout=40_000)
        staff.keyboard.press("s")
        expect(staff.locator("#state")).to_have_text("办理中")
        staff.keyboard.press("f")
        expect(tablet.locator("#rateNumber")).to_have_text("B001", timeout=40_000)
        tablet.click("[data-level=very_satisfied]")
        expect(dash.locator("#satisfaction")).to_have_text("100%", timeout=40_000)
    for page in (kiosk, board, staff, tablet, dash):
        expect(page.locator("#offline")).to_be_hidden()


def test_board_announces_in_order_and_shows_notices(box: PageBox, chromium: Any,
                                                    watch: Watch) -> None:
    from edge.domain.model import DomainEvent

    board = open_page(chromium, watch, box, "/board?voice=1", 1920, 1080)
    expect(board.locator("#latestNumber")).to_have_text("欢迎光临")
    with api(box) as c:
        for svc in ("SHMS", "SHMS", "GA"):
            assert c.post("/api/v1/tickets", json={"service": svc}).status_code == 201
        for staff, pin, window in (("S001", "8001", 1), ("S002", "8002", 2), ("S008", "8008", 8)):
            token = c.post("/api/v1/sessions", json={"staff_id": staff, "pin": pin,
                                                     "window": window}).json()["token"]
            r = c.post(f"/api/v1/windows/{window}/call-next",
                       headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
    expect(board.locator("#latestNumber")).to_have_text("E001")
    expect(board.locator("#latestWhere")).to_contain_text("公安 8号窗")
    expect(board.locator("#recent")).to_contain_text("A002")
    expect(board.locator("#recent")).to_contain_text("A001")
    # A notice from the central room scrolls at the bottom for its time.
    box.call(lambda h: h.rt.emit([DomainEvent("display.message", {
        "command_id": "c-1", "text": "今日16:00起系统维护，请提前办理", "seconds": 600,
        "target": "main"})]))
    expect(board.locator("#notice")).to_have_text("今日16:00起系统维护，请提前办理")
    shot(board, "board-calls")
    # The box's own announcements, played to the end one after the other, in call order.
    board.wait_for_function("window.hallboxAnnounced.length === 3", timeout=40_000)
    assert board.evaluate("window.hallboxAnnounced") == ["A001", "A002", "E001"]


def test_every_page_from_hallbox_run_and_a_bounded_stop(tmp_path: Path, chromium: Any) -> None:
    """The README's links on `hallbox run --sim` as `make run` starts it; with every page's
    stream open, SIGTERM still stops the box promptly."""
    import subprocess
    import sys

    from tests.pages_box import free_port

    port = free_port()
    # The example hall, answering to the name its pages are opened at, as a hall lists its own.
    config = tmp_path / "hall.toml"
    config.write_text((ROOT / "config" / "hall.example.toml").read_text(encoding="utf-8")
                      .replace("[api]\n", '[api]\nallowed_hosts = ["hall.test", "127.0.0.1"]\n',
                               1), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--sim",
         "--ignore-hours", "--port", str(port), "--host", "127.0.0.1", "--data",
         str(tmp_path / "var")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "hallbox did not start"
                time.sleep(0.2)
        watch = Watch(port)
        pages = {path: open_page(chromium, watch, f"http://hall.test:{port}", path, 1366, 768)
                 for path in ("/", "/staff", "/board", "/evaluator", "/dashboard", "/docs")}
        expect(pages["/"].locator(".svc")).to_have_count(7)
        expect(pages["/staff"].locator("#window option")).to_have_count(14)
        expect(pages["/staff"].locator("#deviceInfo")).to_have_text("本机未配对")
        expect(pages["/board"].locator("#services tr")).to_have_count(7)
        expect(pages["/evaluator"].locator("#pair")).to_be_visible()
        expect(pages["/dashboard"].locator("#login")).to_be_visible()
        expect(pages["/docs"].locator(".swagger-ui .title")).to_contain_text("hallbox")
        watch.check()
        with watch.tolerate(DOWN):
            t0 = time.monotonic()
            proc.terminate()
            proc.wait(timeout=15)
            assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_dashboard_alerts_and_month_report(box: PageBox, chromium: Any, watch: Watch) -> None:
    """A bad rating given on the tablet raises a floor alert the dashboard shows at once; the
    month's attendance summary downloads with the manager's token."""
    dash = open_page(chromium, watch, box, "/dashboard", 1600, 1000,
                     {"dashboard.token": MANAGER_TOKEN})
    expect(dash.locator("#alerts")).to_have_text("当前无告警")
    tablet = open_page(chromium, watch, box, "/evaluator", 1280, 800,
                       {"evaluator": {"window": 2, "token": "demo-evaluator-2"}})
    with api(box) as c:
        assert c.post("/api/v1/tickets", json={"service": "SHMS"}).status_code == 201
        token = c.post("/api/v1/sessions", json={"staff_id": "S002", "pin": "8002",
                                                 "window": 2}).json()["token"]
        auth = {"authorization": f"Bearer {token}"}
        for step in ("call-next", "start", "finish"):
            assert c.post(f"/api/v1/windows/2/{step}", headers=auth).status_code == 200
    expect(tablet.locator("#rateNumber")).to_have_text("A001")
    tablet.click("[data-level=very_dissatisfied]")
    tablet.click("#reasonList button >> nth=0")
    reason = tablet.locator("#reasonList button >> nth=0").text_content()
    expect(tablet.locator("#thanksSub")).to_have_text("您的评价：非常不满意")
    alert = dash.locator("#alerts .alert")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("差评")
    expect(alert).to_contain_text("2号窗口")
    expect(alert).to_contain_text(f"原因：{reason}")
    expect(dash.locator("#satisfaction")).to_have_text("0%")
    shot(dash, "dashboard-alert")
    with dash.expect_download() as dl:
        dash.click("#reports a")
    path = dl.value.path()
    assert dl.value.suggested_filename == "月度考勤汇总-2026-11.xlsx"
    assert Path(path).read_bytes()[:2] == b"PK"  # an XLSX (zip) from the box, not an error


def test_managers_notice_and_open_alerts_on_the_board(box: PageBox, chromium: Any,
                                                      watch: Watch) -> None:
    """The manager posts a notice from the dashboard: the board scrolls it; open floor alerts
    (yellow, then red) show on the board ahead of it, live from its stream; taken down, the
    board's own notice comes back."""
    dash = open_page(chromium, watch, box, "/dashboard", 1600, 1000,
                     {"dashboard.token": MANAGER_TOKEN})
    board = open_page(chromium, watch, box, "/board", 1920, 1080)
    expect(board.locator("#notice")).to_contain_text("请留意叫号")
    expect(board.locator("#alerts .a")).to_have_count(0)
    dash.click("#noticePost")  # nothing typed: said so, nothing sent
    expect(dash.locator("#noticeMsg")).to_have_text("请先输入公告内容")
    dash.fill("#noticeText", "今日15:00后社保业务请到二楼办理")
    dash.click("#noticePost")
    expect(dash.locator("#noticeMsg")).to_contain_text("已发布")
    expect(board.locator("#notice")).to_have_text("今日15:00后社保业务请到二楼办理")
    # People wait for 公安 and nobody is at its windows (8, 9): yellow cards, then red ones.
    with api(box) as c:
        assert c.post("/api/v1/tickets", json={"service": "GA"}).status_code == 201
    box.advance(minutes=6)
    box.call(lambda h: h.box.services.supervision.tick())
    card = board.locator("#alerts .a", has_text="窗口无人值守")
    expect(card.first).to_have_class(re.compile("yellow"))
    expect(card).to_have_count(2)
    expect(card.first).to_contain_text("黄牌·窗口无人值守　公安 8号窗")
    expect(dash.locator("#alerts")).to_contain_text("窗口无人值守")
    box.advance(minutes=10)
    box.call(lambda h: h.box.services.supervision.tick())
    expect(card.first).to_contain_text("红牌·窗口无人值守")
    expect(board.locator("#notice")).to_have_text("今日15:00后社保业务请到二楼办理")
    # The ticker scrolls in from the right: hold it part way through for the screenshot.
    board.locator("#ticker").evaluate(
        "t => { t.style.animationDelay = '-20s'; t.style.animationPlayState = 'paused'; }")
    shot(board, "board-notice-alerts")
    shot(dash, "dashboard-notice")
    dash.click("#noticeClear")
    expect(dash.locator("#noticeMsg")).to_have_text("公告已撤下")
    expect(board.locator("#notice")).to_contain_text("请留意叫号")
    # Staff log in at 公安's windows: the cards go from the board with the alerts.
    with api(box) as c:
        for staff, pin, window in (("S008", "8008", 8), ("S009", "8009", 9)):
            assert c.post("/api/v1/sessions", json={"staff_id": staff, "pin": pin,
                                                    "window": window}).status_code == 201
    box.call(lambda h: h.box.services.supervision.tick())
    expect(card).to_have_count(0)


def test_docs_offline(box: PageBox, chromium: Any, watch: Watch) -> None:
    page = open_page(chromium, watch, box, "/docs", 1400, 900)
    expect(page.locator(".swagger-ui .title")).to_contain_text("hallbox")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    time.sleep(0.5)  # anything it would fetch from outside shows up in the watch
    shot(page, "docs")


def test_no_page_uses_randomuuid_or_a_cdn() -> None:
    """crypto.randomUUID exists only on secure origins; a hall opens http://<LAN address>."""
    ui = ROOT / "kiosk_ui"
    pages = [*ui.glob("*.html"), *ui.glob("*.js"), *ui.glob("*.css")]
    assert len(pages) >= 7
    for f in pages:
        text = f.read_text(encoding="utf-8")
        assert "randomUUID(" not in text, f
        urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[/\w.-]*", text)
                if u != "http://www.w3.org/2000/svg"]
        assert urls == [], (f, urls)
