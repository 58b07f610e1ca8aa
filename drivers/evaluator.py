"""4-key evaluators (评价器) on an RS-485 bus, speaking the FF 68 keypad protocol.

Key mapping (drivers.protocols.keypad RATING frame, DATA = key 1..4), the same as
edge.domain.rating.FOUR_KEY: 1 非常满意, 2 满意, 3 基本满意, 4 不满意. 非常不满意 has no key on
these devices; a 不满意 from a keypad carries no reason and is flagged `follow_up`.

When the window's rating request is committed, the box sends RATE_PROMPT (the ticket number)
to that window's evaluator. A key press becomes a submission to the rating service under the
same binding rules as a tablet: ACK OK and RATE_DONE when it is recorded, ACK REFUSED when a
rule refuses it (the refusal is a rating.rejected event), ACK BAD_DATA for a key outside 1..4,
ACK NOT_CONFIGURED for an address the config does not know. The driver attaches to a
SharedBus (drivers.base), the one supervised Link of that RS-485 line; when it drops, every
evaluator on it is reported offline (grade C: the window still serves).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from drivers.base import DeviceHealthReporter, DeviceOffline, SharedBus
from drivers.protocols import keypad
from edge.config.supervision_devices import EvaluatorConfig
from edge.domain.errors import DomainError
from edge.domain.rating import FOUR_KEY, Outcome, Submission
from edge.ratings import RatingService
from edge.runtime import Completion, HallRuntime

log = logging.getLogger(__name__)


class EvaluatorBusDriver:
    def __init__(self, rt: HallRuntime, bus: SharedBus, evaluators: list[EvaluatorConfig],
                 ratings: RatingService) -> None:
        self.rt = rt
        self.name = f"evaluators-{bus.bus_id}"
        self.bus = bus
        self.ratings = ratings
        self.by_address = {e.address: e for e in evaluators if e.address is not None}
        self.by_window = {e.window: e for e in evaluators}
        self.health = {e.id: DeviceHealthReporter(rt, e.id, "evaluator", "C")
                       for e in evaluators}
        self.decoder = keypad.KeypadDecoder()
        self.link = bus.link
        bus.attach(self._on_data, self._on_up, self._on_down)
        self.accepted = 0
        self.refused = 0
        self.bad_keys = 0
        self._unsub: Any = None

    async def start(self) -> None:
        """The bus itself is a component of its own (started after this driver attaches)."""
        self._unsub = self.rt.bus.subscribe(self.name, self._on_event)

    async def stop(self) -> None:
        if self._unsub:
            self._unsub()

    def _metrics(self) -> dict[str, int]:
        return {"accepted": self.accepted, "refused": self.refused, "bad_keys": self.bad_keys,
                "dropped_frames": self.decoder.stats.dropped}

    def _on_up(self) -> None:
        self.decoder = keypad.KeypadDecoder()
        for h in self.health.values():
            h.ok(f"on {self.link.resolved}", self._metrics())
        # A request made while the bus was down still deserves its prompt.
        for window, e in self.by_window.items():
            r = self.ratings.pending_for(window)
            if r is not None and e.address is not None:
                self._send(keypad.KeypadFrame(e.address, keypad.Func.RATE_PROMPT,
                                              r.number.encode("ascii", "replace")[:16]))

    def _on_down(self, reason: str) -> None:
        for h in self.health.values():
            h.offline(f"evaluator bus down: {reason}", self._metrics())

    def _send(self, frame: keypad.KeypadFrame) -> None:
        try:
            self.link.send(keypad.encode(frame))
        except DeviceOffline:
            pass  # the prompt is re-sent on reconnect; acks for a dead bus have no reader

    def _on_event(self, env: dict[str, Any]) -> None:
        if env["type"] != "rating.requested":
            return
        e = self.by_window.get(env["data"]["window"])
        if e is not None and e.address is not None:
            self._send(keypad.KeypadFrame(e.address, keypad.Func.RATE_PROMPT,
                                          env["data"]["number"].encode("ascii", "replace")))

    def _on_data(self, chunk: bytes) -> None:
        for f in self.decoder.feed(chunk):
            if f.func != keypad.Func.RATING:
                continue  # keys of caller keypads and host frames are not ours
            e = self.by_address.get(f.address)
            if e is None:
                self._send(keypad.KeypadFrame(f.address, keypad.Func.ACK, bytes(
                    [f.func, keypad.AckStatus.NOT_CONFIGURED])))
                continue
            key = f.data[0] if len(f.data) == 1 else 0
            level = FOUR_KEY.get(key)
            if level is None:
                self.bad_keys += 1
                self._send(keypad.KeypadFrame(f.address, keypad.Func.ACK,
                                              bytes([f.func, keypad.AckStatus.BAD_DATA])))
                continue
            try:
                out, done = self.ratings.submit_nowait(Submission(e.window, level, "keypad",
                                                                  e.id))
            except DomainError as err:
                log.warning("%s: rating at window %s refused: %s", self.name, e.window,
                            err.detail)
                self.refused += 1
                self._send(keypad.KeypadFrame(f.address, keypad.Func.ACK,
                                              bytes([f.func, keypad.AckStatus.REFUSED])))
                continue
            # Acknowledged on the keypad only once the rating is on disk.
            asyncio.get_running_loop().create_task(self._answer(f, key, out, done))

    async def _answer(self, f: keypad.KeypadFrame, key: int, out: Outcome,
                      done: Completion) -> None:
        accepted = out.accepted
        try:
            await done.done()
        except Exception:
            log.exception("%s: a rating could not be recorded", self.name)
            accepted = False
        status = keypad.AckStatus.OK if accepted else keypad.AckStatus.REFUSED
        self._send(keypad.KeypadFrame(f.address, keypad.Func.ACK, bytes([f.func, status])))
        if accepted:
            self.accepted += 1
            self._send(keypad.KeypadFrame(f.address, keypad.Func.RATE_DONE, bytes([key])))
        else:
            self.refused += 1
