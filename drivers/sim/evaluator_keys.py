"""Simulated 4-key evaluators (评价器) on one RS-485 line, as a pseudo-terminal.

Each evaluator has a bus address; `press(address, key)` sends the rating frame a real device
sends when the applicant presses key 1..4 (非常满意 / 满意 / 基本满意 / 不满意). Every frame the box
sends back (ACK, RATE_PROMPT, RATE_DONE) is decoded and kept per address in `received`, so tests
and the demo can see what each device showed.
"""

from __future__ import annotations

from pathlib import Path

from drivers.protocols import keypad
from drivers.sim.pty_port import PtyPort, PtySimulator


class EvaluatorKeysSim(PtySimulator):
    def __init__(self, link: str | Path, addresses: list[int]) -> None:
        self.addresses = set(addresses)
        self.decoder = keypad.KeypadDecoder()
        self.received: dict[int, list[keypad.KeypadFrame]] = {a: [] for a in addresses}
        self.port = PtyPort(Path(link).parent, Path(link).name, self._on_bytes)


    def plug(self) -> None:
        self.decoder = keypad.KeypadDecoder()
        self.port.plug()


    def press(self, address: int, key: int) -> bytes:
        """The applicant presses a key; returns the bytes put on the line."""
        frame = keypad.encode(keypad.KeypadFrame(address, keypad.Func.RATING, bytes([key])))
        self.port.write(frame)
        return frame

    def send_raw(self, data: bytes) -> None:
        self.port.write(data)

    def _on_bytes(self, data: bytes) -> None:
        for f in self.decoder.feed(data):
            if f.address in self.addresses:
                self.received[f.address].append(f)
