"""LED window boards and the main hall board: the hall's state, shown over RS-485.

A board is a projection of the queue: after each committed event that touches a window the
driver recomputes that window's text and writes it (BX-5 or "@" protocol, per board). The main
board shows the latest calls. After a bus reconnects every board on it is sent its text again,
since a board that missed frames keeps showing stale text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from drivers.base import DeviceHealthReporter, DeviceOffline, SharedBus
from drivers.protocols import at_board, bx5
from edge.config.calling_devices import BoardConfig
from edge.runtime import HallRuntime

log = logging.getLogger(__name__)

PAUSED_TEXT = "暂停服务"
REPLY_TIMEOUT_S = 2.0  # a BX-5 controller that leaves a command unanswered this long is faulty
MAIN_CALLS = 3  # calls the main board keeps, newest first
WINDOW_EVENTS = ("ticket.called", "ticket.recalled", "ticket.no_show", "ticket.finished",
                 "ticket.transferred", "ticket.started", "window.paused", "window.resumed",
                 "staff.logged_in", "staff.logged_out")


def call_text(number: str, window: int) -> str:
    return f"请{number}号到{window}号窗口办理"


def frame_for(b: BoardConfig, text: str) -> bytes:
    if b.protocol == "bx5":
        mode = 3 if b.main else 1  # the main board scrolls its line of calls
        return bx5.encode_text(bx5.DynamicText(b.address, text, mode=mode))
    return at_board.encode(b.address, text)


class BoardDriver:
    name = "boards"

    def __init__(self, rt: HallRuntime, boards: list[BoardConfig],
                 buses: dict[str, SharedBus]) -> None:
        self.rt = rt
        self.boards = boards
        self.buses = buses
        self.text: dict[str, str] = {}
        self.calls: deque[str] = deque(maxlen=MAIN_CALLS)
        self.frames_sent = 0
        self.acks = 0
        self.health = {b.id: DeviceHealthReporter(rt, b.id, "board", offline_grade="B")
                       for b in boards}
        # By window, and the main boards: an event touches one window, and looking through
        # every board for it cost O(boards) per event (250 calls x 251 boards in a big hall).
        self.by_window: dict[int, list[BoardConfig]] = {}
        for b in boards:
            if b.window is not None:
                self.by_window.setdefault(b.window, []).append(b)
        self.mains = [b for b in boards if b.main]
        self.by_address = {(b.bus, b.address): b for b in boards}  # whose reply a frame is
        self._mains_due = False
        self._decoders: dict[str, bx5.Bx5Decoder] = {}
        self._unsub: Any = None
        # BX-5 boards answer each command: the loop time of the oldest unanswered one.
        self._unanswered: dict[tuple[str, int], float] = {}
        self._silent: set[str] = set()
        self._watch: asyncio.Task[None] | None = None
        # Notices (display.message, the central room's or the manager's): board id -> (text,
        # expiry timer).
        self._notices: dict[str, tuple[str, asyncio.TimerHandle]] = {}
        for bus_id in {b.bus for b in boards}:
            bus = buses[bus_id]
            self._decoders[bus_id] = bx5.Bx5Decoder()
            bus.attach(on_data=lambda d, i=bus_id: self._on_data(i, d),
                       on_up=lambda i=bus_id: self._on_up(i),
                       on_down=lambda r, i=bus_id: self._on_down(i, r))

    async def start(self) -> None:
        self._unsub = self.rt.bus.subscribe(self.name, self._on_event)
        for b in self.boards:
            self.text[b.id] = self._window_text(b) if b.window else b.idle_text
        self._watch = asyncio.create_task(self._watch_replies(), name="boards-replies")

    async def stop(self) -> None:
        for _, timer in self._notices.values():
            timer.cancel()
        self._notices.clear()
        if self._unsub:
            self._unsub()
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    # ---- what a board shows ---------------------------------------------------------------
    def _window_text(self, b: BoardConfig) -> str:
        assert b.window is not None
        h = self.rt.hall
        w = h.windows.get(b.window)
        if w is None or w.staff is None:
            return b.idle_text
        if w.paused:
            return PAUSED_TEXT
        cur = h.current_ticket(b.window)
        if cur is not None:
            return f"{cur.number} 请到{b.window}号窗口"
        return b.idle_text

    def _main_text(self, b: BoardConfig) -> str:
        return "  ".join(self.calls) if self.calls else b.idle_text

    def _normal_text(self, b: BoardConfig) -> str:
        return self._window_text(b) if b.window else self._main_text(b)

    def _targeted(self, target: Any) -> list[BoardConfig]:
        return [b for b in self.boards
                if target == "all" or (target == "main" and b.main)
                or (isinstance(target, int) and b.window == target)]

    def _notice(self, data: dict[str, Any]) -> None:
        """Show a notice (the central room's or the manager's) for its time, then go back to
        what the board showed."""
        loop = asyncio.get_running_loop()
        for b in self._targeted(data["target"]):
            old = self._notices.pop(b.id, None)
            if old is not None:
                old[1].cancel()
            timer = loop.call_later(data["seconds"], self._end_notice, b.id)
            self._notices[b.id] = (data["text"], timer)
            self._show(b, data["text"], force=True)

    def _end_notice(self, board_id: str) -> None:
        text, _ = self._notices.pop(board_id, ("", None))
        b = next(x for x in self.boards if x.id == board_id)
        # A call shown since then is the truth and stays; only the notice itself is replaced.
        if self.text.get(board_id) == text:
            self._show(b, self._normal_text(b))

    def _on_event(self, env: dict[str, Any]) -> None:
        t = env["type"]
        if t == "display.message":
            self._notice(env["data"])
            return
        if t == "display.cleared":  # the manager took the notice down before its time
            for b in self._targeted(env["data"]["target"]):
                notice = self._notices.get(b.id)
                if notice is not None:
                    notice[1].cancel()
                    self._end_notice(b.id)
            return
        if t == "day.opened":  # a new day: sessions ended, yesterday's calls are gone
            self.calls.clear()
            for b in self.boards:
                self._show(b, self._window_text(b) if b.window else b.idle_text)
            return
        if t not in WINDOW_EVENTS:
            return
        d = env["data"]
        window = d.get("window")
        announce = t in ("ticket.called", "ticket.recalled")
        if announce:
            line = call_text(d["number"], window)
            if line in self.calls:  # a recall moves its line to the front, once
                self.calls.remove(line)
            self.calls.appendleft(line)
        for b in self.by_window.get(window, ()):
            # A recall shows the same text: send it again so the board flashes it anew.
            self._show(b, self._window_text(b), force=announce)
        if announce and self.mains and not self._mains_due:
            # The main board shows the latest calls: when 50 windows call at once it is written
            # once with all of them after this turn, not 50 times: each frame of three calls is
            # ~0.1 s of a 9600-baud line, and the window boards' frames queue behind them.
            self._mains_due = True
            asyncio.get_running_loop().call_soon(self._write_mains)

    def _write_mains(self) -> None:
        self._mains_due = False
        for b in self.mains:
            self._show(b, self._main_text(b), force=True)

    def _show(self, b: BoardConfig, text: str, force: bool = False) -> None:
        if not force and self.text.get(b.id) == text:
            return
        self.text[b.id] = text
        self._write(b)

    def _write(self, b: BoardConfig) -> None:
        bus = self.buses[b.bus]
        try:
            bus.link.send(frame_for(b, self.text[b.id]))
            self.frames_sent += 1
            if b.protocol == "bx5":
                self._unanswered.setdefault((b.bus, b.address),
                                            asyncio.get_running_loop().time())
        except DeviceOffline:
            pass  # resent on reconnect; health already says the bus is down
        except ValueError as e:  # text too long for the board: shorten, never fail the call
            log.warning("%s: %s; shortened", b.id, e)
            self.text[b.id] = self.text[b.id][:40]
            with contextlib.suppress(DeviceOffline, ValueError):
                bus.link.send(frame_for(b, self.text[b.id]))
                self.frames_sent += 1

    # ---- bus events -------------------------------------------------------------------------
    def _on_up(self, bus_id: str) -> None:
        for b in self.boards:
            if b.bus == bus_id:
                self._silent.discard(b.id)
                self._unanswered.pop((b.bus, b.address), None)
                self.health[b.id].ok("connected")
                if b.id in self.text:
                    self._write(b)

    def _on_down(self, bus_id: str, reason: str) -> None:
        for b in self.boards:
            if b.bus == bus_id:
                self.health[b.id].offline(f"bus {bus_id}: {reason}")

    def _on_data(self, bus_id: str, data: bytes) -> None:
        for p in self._decoders[bus_id].feed(data):
            if p.dst == bx5.HOST_ADDR and p.data[:2] == bytes(bx5.CMD_ACK):
                self.acks += 1
                self._unanswered.pop((bus_id, p.src), None)
                b = self.by_address.get((bus_id, p.src))
                if b is not None and b.id in self._silent:
                    self._silent.discard(b.id)
                    self.health[b.id].ok("answering again")

    async def _watch_replies(self) -> None:
        """One dead controller on a live line: grade C for that board, the rest run on."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REPLY_TIMEOUT_S / 4)
            now = loop.time()
            for b in self.boards:
                since = self._unanswered.get((b.bus, b.address))
                if since is None or b.id in self._silent or not self.buses[b.bus].link.online:
                    continue
                if now - since > REPLY_TIMEOUT_S:
                    self._silent.add(b.id)
                    self.health[b.id].degraded("C", "controller does not answer")
