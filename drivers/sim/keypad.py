"""Simulated caller keypads and 4-key evaluators on one RS-485 line (a pseudo-terminal).

`press(address, func, data)` sends the key frame a keypad sends; the simulator decodes what the
host sends back: acknowledgements and display contents per address.

For the demo (`make run`), a loopback control port takes one line per key press, as a person
at the keypad would: ``8 login S008:8008``, ``8 call``, ``8 finish``, ``8 transfer ZCDJ`` ...
and answers with the acknowledgement and what the keypad's display shows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.protocols import keypad as kp
from drivers.sim.pty_port import PtyPort, PtySimulator

KEYS = {"call": kp.Func.KEY_CALL, "recall": kp.Func.KEY_RECALL, "finish": kp.Func.KEY_FINISH,
        "pause": kp.Func.KEY_PAUSE, "transfer": kp.Func.KEY_TRANSFER,
        "noshow": kp.Func.KEY_NO_SHOW, "start": kp.Func.KEY_START, "login": kp.Func.KEY_LOGIN,
        "logout": kp.Func.KEY_LOGOUT}


class KeypadBusSim(PtySimulator):
    device_class = "keypad"

    def __init__(self, dev_dir: Path, bus_id: str, addresses: list[int]) -> None:
        self.bus_id = bus_id
        self.name = f"sim-{bus_id}"
        self.addresses = set(addresses)
        self.decoder = kp.KeypadDecoder()
        self.acks: dict[int, list[tuple[int, int]]] = {a: [] for a in addresses}
        self.display: dict[int, tuple[int, str, str]] = {}
        self.prompts: dict[int, str] = {}
        self._changed = asyncio.Event()
        self._control: asyncio.Server | None = None
        self.port = PtyPort(dev_dir, bus_id, self._on_bytes)


        if self._control is not None:
            self._control.close()
            self._control = None

    async def serve_control(self) -> int:
        """Start the loopback control port; returns its port number."""
        self._control = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self._control.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write((await self._command(line.decode("utf-8", "replace")) + "\n")
                             .encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _command(self, line: str) -> str:
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or parts[1] not in KEYS:
            return "usage: <address> " + "|".join(KEYS) + " [data]"
        addr = int(parts[0])
        if addr not in self.addresses:
            return f"no keypad at address {addr}"
        data = parts[2].encode("ascii", "replace") if len(parts) > 2 else b""
        try:
            status = await self.key(addr, KEYS[parts[1]], data, timeout=5.0)
        except TimeoutError:
            return "no answer from the box"
        await asyncio.sleep(0.05)  # let the display update arrive
        w, number, st = self.display.get(addr, (0, "", ""))
        return f"{kp.AckStatus(status).name} display: waiting={w} number={number} {st}".strip()


    def press(self, address: int, func: int, data: bytes = b"") -> None:
        self.port.write(kp.encode(kp.KeypadFrame(address, func, data)))

    def _on_bytes(self, data: bytes) -> None:
        for f in self.decoder.feed(data):
            if f.address not in self.addresses:
                continue
            if f.func == kp.Func.ACK and len(f.data) == 2:
                self.acks[f.address].append((f.data[0], f.data[1]))
            elif f.func == kp.Func.DISPLAY:
                try:
                    self.display[f.address] = kp.parse_display(f.data)
                except ValueError:
                    continue
            elif f.func == kp.Func.RATE_PROMPT:
                self.prompts[f.address] = f.data.decode("ascii", "replace")
            self._changed.set()

    async def key(self, address: int, func: int, data: bytes = b"",
                  timeout: float = 5.0) -> int:
        """Press a key and wait for the host's acknowledgement; returns its status."""
        before = len(self.acks[address])
        self.press(address, func, data)

        async def _wait() -> None:
            while len(self.acks[address]) <= before:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(_wait(), timeout)
        f, status = self.acks[address][before]
        if f != func:
            raise AssertionError(f"ack for func {f:#04x}, expected {func:#04x}")
        return status

    async def wait_display(self, address: int, pred: object, timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while not (address in self.display and pred(self.display[address])):  # type: ignore[operator]
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(_wait(), timeout)
