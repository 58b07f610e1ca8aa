"""Caller keypads (呼叫器): staff run their window from the keypad alone.

Keys become queue operations on the loop thread (`rt.submit`), exactly like the staff page's
buttons; every key frame is acknowledged (ok / refused), and the keypad's display shows the
window's waiting count and current number after each change. A refused key (nothing waiting,
window paused ...) changes nothing and says so on the display. Login is ``staff_id:PIN`` typed
on the keypad, checked with argon2 off the loop thread (edge.pins).

Frames for addresses that are not configured keypads (e.g. evaluators on the same line) are
left to their own drivers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from drivers.base import DeviceHealthReporter, DeviceOffline, SharedBus
from drivers.protocols import keypad as kp
from edge.config.calling_devices import KeypadConfig
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent, TicketState
from edge.domain.queue import Hall
from edge.pins import pin_matches
from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
KEYPAD_PAUSE_REASON = "呼叫器暂停"
# A keypad's waiting count may lag this much; its own window's changes are shown at once.
# With 250 windows calling at once, refreshing every count after each commit group sent
# ~250 display frames a group (13 groups a burst): seconds of a 9600-baud line each time.
COUNT_REFRESH_S = 0.5

TOUCHES_WINDOW = ("ticket.called", "ticket.recalled", "ticket.no_show", "ticket.finished",
                  "ticket.transferred", "ticket.started", "window.paused", "window.resumed",
                  "staff.logged_in", "staff.logged_out")


class KeypadDriver:
    name = "keypads"

    def __init__(self, rt: HallRuntime, keypads: list[KeypadConfig],
                 buses: dict[str, SharedBus]) -> None:
        self.rt = rt
        self.keypads = keypads
        self.buses = buses
        self.by_addr = {(k.bus, k.address): k for k in keypads}
        self.by_window = {k.window: k for k in keypads}
        self.health = {k.id: DeviceHealthReporter(rt, k.id, "keypad", offline_grade="B")
                       for k in keypads}
        self.decoders: dict[str, kp.KeypadDecoder] = {}
        self.keys = 0
        self.refused = 0
        self.foreign = 0  # frames for addresses that are not keypads
        self.last_error: dict[int, str] = {}  # window -> last refusal, for the staff page
        self._unsub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stale: set[int] = set()
        self._status: dict[int, str] = {}
        self._flush_scheduled = False
        # Services whose windows' displays only need a new waiting count (another window
        # called or a ticket was taken): refreshed together at most every COUNT_REFRESH_S.
        # Services, not windows: marking every window of the service was O(windows) per call.
        self._counts_stale: set[str] = set()
        self._counts_timer: asyncio.TimerHandle | None = None
        self._by_service: dict[str, list[KeypadConfig]] = {}
        for k in keypads:
            for s in rt.hall.window_cfg[k.window].services:
                self._by_service.setdefault(s.service, []).append(k)
        for bus_id in {k.bus for k in keypads}:
            self.decoders[bus_id] = kp.KeypadDecoder()
            buses[bus_id].attach(on_data=lambda d, i=bus_id: self._on_data(i, d),
                                 on_up=lambda i=bus_id: self._on_up(i),
                                 on_down=lambda r, i=bus_id: self._on_down(i, r))

    async def start(self) -> None:
        self._unsub = self.rt.bus.subscribe(self.name, self._on_event)

    async def stop(self) -> None:
        if self._unsub:
            self._unsub()
        if self._counts_timer is not None:
            self._counts_timer.cancel()
            self._counts_timer = None
        for t in list(self._tasks):
            t.cancel()

    # ---- bus ------------------------------------------------------------------------------
    def _on_up(self, bus_id: str) -> None:
        for k in self.keypads:
            if k.bus == bus_id:
                self.health[k.id].ok("connected")
                self._display(k)

    def _on_down(self, bus_id: str, reason: str) -> None:
        for k in self.keypads:
            if k.bus == bus_id:
                self.health[k.id].offline(f"bus {bus_id}: {reason}")

    def _on_data(self, bus_id: str, data: bytes) -> None:
        keys: list[tuple[KeypadConfig, kp.KeypadFrame, Any]] = []
        for f in self.decoders[bus_id].feed(data):
            k = self.by_addr.get((bus_id, f.address))
            if k is None or f.func >= 0x80:
                self.foreign += 1
                continue
            self.keys += 1
            if f.func == kp.Func.KEY_LOGIN:
                t = asyncio.get_running_loop().create_task(self._login(k, f))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
                continue
            op = self._op(k, f)
            if op is None:
                self._send(k, kp.ack(k.address, f.func, kp.AckStatus.BAD_DATA))
            else:
                keys.append((k, f, op))
        if keys:
            self._keys(keys)

    def _send(self, k: KeypadConfig, data: bytes) -> None:
        try:
            self.buses[k.bus].link.send(data)
        except DeviceOffline:
            pass  # the display is refreshed when the bus comes back

    # ---- keys -----------------------------------------------------------------------------
    def _op(self, k: KeypadConfig, f: kp.KeypadFrame) -> Any:
        """The hall operation a key stands for (None: not a key this pad sends)."""
        w = k.window
        F = kp.Func
        func = f.func
        # A chain of ifs, not a table of closures built for every key press.
        if func == F.KEY_CALL:
            # call-next with nobody waiting is not an error in the domain: say so on the pad.
            def call(h: Hall) -> tuple[bool, list[DomainEvent]]:
                t, ev = h.call_next(w)
                return t is not None, ev
            return call
        if func == F.KEY_NO_SHOW:
            return lambda h: (None, h.no_show(w))
        if func == F.KEY_FINISH:
            def finish(h: Hall) -> tuple[None, list[DomainEvent]]:
                cur = h.current_ticket(w)
                events: list[DomainEvent] = []
                if cur is not None and cur.state == TicketState.CALLED:
                    events += h.start(w)
                events += h.finish(w)
                return None, events
            return finish
        if func == F.KEY_RECALL:
            return lambda h: (None, h.recall(w))
        if func == F.KEY_START:
            return lambda h: (None, h.start(w))
        if func == F.KEY_PAUSE:
            def pause(h: Hall) -> tuple[None, list[DomainEvent]]:
                if h.windows[w].paused:
                    return None, h.resume(w)
                return None, h.pause(w, KEYPAD_PAUSE_REASON)
            return pause
        if func == F.KEY_LOGOUT:
            return lambda h: (None, h.logout(w))
        if func == F.KEY_TRANSFER:
            try:
                service = f.data.decode("ascii").strip()
            except UnicodeDecodeError:
                return None
            return lambda h: (None, h.transfer(w, service)[1])
        return None

    def _keys(self, keys: list[tuple[KeypadConfig, kp.KeypadFrame, Any]]) -> None:
        """The keys of one read, applied now in key order and committed together; each pad is
        acknowledged once its key is on disk (never before), a refused key at once."""
        try:
            results, done = self.rt.submit_each([op for _k, _f, op in keys])
        except Exception:
            log.exception("keys from %s failed", keys[0][0].bus)
            for k, f, _op in keys:
                self._refuse(k, f, "error")
            return
        accepted: list[tuple[KeypadConfig, kp.KeypadFrame, Any]] = []
        for (k, f, _op), result in zip(keys, results, strict=True):
            if isinstance(result, DomainError):
                self._refuse(k, f, result.code)
            elif isinstance(result, Exception):
                log.error("%s: key %#04x failed: %s", k.id, f.func, result)
                self._refuse(k, f, "error")
            else:
                accepted.append((k, f, result))
        if accepted:
            done.when_durable(lambda error: self._answer_all(accepted, error))

    def _answer_all(self, accepted: list[tuple[KeypadConfig, kp.KeypadFrame, Any]],
                    error: BaseException | None) -> None:
        for k, f, result in accepted:
            self._answer(k, f, result, error)

    def _answer(self, k: KeypadConfig, f: kp.KeypadFrame, result: Any,
                error: BaseException | None) -> None:
        """Acknowledge a key once its operation is on disk (never before)."""
        if error is not None:
            log.error("%s: key %#04x could not be recorded: %s", k.id, f.func, error)
            self._refuse(k, f, "error")
            return
        if result is False:
            self._refuse(k, f, "empty")
            return
        self.last_error.pop(k.window, None)
        self._send(k, kp.ack(k.address, f.func, kp.AckStatus.OK))

    def _refuse(self, k: KeypadConfig, f: kp.KeypadFrame, why: str) -> None:
        self.refused += 1
        self.last_error[k.window] = why
        self._send(k, kp.ack(k.address, f.func, kp.AckStatus.REFUSED))
        self._display(k, status=why[:16])

    async def _login(self, k: KeypadConfig, f: kp.KeypadFrame) -> None:
        try:
            staff_id, _, pin = f.data.decode("ascii").partition(":")
        except UnicodeDecodeError:
            self._send(k, kp.ack(k.address, f.func, kp.AckStatus.BAD_DATA))
            return
        staff = self.rt.hall.staff.get(staff_id)
        ok = False
        if staff is not None and pin:
            ok = await pin_matches(staff.pin_hash, pin)  # one at a time, off the loop
        if not ok:
            self._refuse(k, f, "bad-login")
            return
        try:
            await self.rt.run(lambda h: (None, h.login(staff_id, k.window)))
        except DomainError as e:
            self._refuse(k, f, e.code)
            return
        self._send(k, kp.ack(k.address, f.func, kp.AckStatus.OK))

    # ---- display --------------------------------------------------------------------------
    def _display(self, k: KeypadConfig, status: str = "") -> None:
        """Mark a keypad's display stale; all stale displays are sent once this turn ends.

        Coalescing matters: one call changes the waiting count of every window serving that
        service, and 50 windows calling at once would otherwise send 50 x 50 frames.
        """
        if status:
            self._status[k.window] = status
        self._stale.add(k.window)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_displays)

    def _flush_displays(self) -> None:
        self._flush_scheduled = False
        h = self.rt.hall
        waiting: dict[str, int] = {}
        stale, self._stale = self._stale, set()
        for window in sorted(stale):
            k = self.by_window[window]
            w = h.windows.get(window)
            total = 0
            for s in h.window_cfg[window].services:
                if s.service not in waiting:
                    waiting[s.service] = h.waiting_count(s.service)
                total += waiting[s.service]
            cur = h.current_ticket(window) if w else None
            status = self._status.pop(window, "")
            if not status and w is not None:
                status = "OFF" if w.staff is None else "PAUSE" if w.paused else ""
            self._send(k, kp.display(k.address, total, cur.number if cur else None, status))

    def _on_event(self, env: dict[str, Any]) -> None:
        t = env["type"]
        d = env["data"]
        if t in TOUCHES_WINDOW:
            k = self.by_window.get(d.get("window"))
            if k is not None:
                self._display(k)
            if t in ("ticket.called", "ticket.transferred"):
                # Other windows of the same service see their waiting count change.
                self._refresh_service(d["service"])
        elif t in ("ticket.issued", "ticket.cancelled", "ticket.reactivated"):
            self._refresh_service(d["service"])
        elif t == "day.opened":
            for k in self.keypads:
                self._display(k)

    def _refresh_service(self, service: str) -> None:
        if service not in self._by_service:
            return
        self._counts_stale.add(service)
        if self._counts_timer is None:
            self._counts_timer = asyncio.get_running_loop().call_later(
                COUNT_REFRESH_S, self._refresh_counts)

    def _refresh_counts(self) -> None:
        self._counts_timer = None
        stale, self._counts_stale = self._counts_stale, set()
        for service in stale:
            for k in self._by_service[service]:
                self._display(k)
