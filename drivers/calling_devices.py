"""The device plugin for the hall devices of [devices]: printers, RS-485 buses with their boards
and keypads, and voice (entry point `hallbox.devices: hall`). With --sim it starts a simulator
for each device first and points the driver at it (a pty symlink under {data}/dev/ or a loopback
port).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.base import SharedBus
from drivers.board import BoardDriver
from drivers.keypad import KeypadDriver
from drivers.printer import PrintDeskImpl, TicketPrinter
from drivers.sim.board import BoardBusSim
from drivers.sim.keypad import KeypadBusSim
from drivers.sim.printer import PrinterSim
from drivers.sim.usb_printer import UsbPrinterSim
from drivers.usb_transport import parse_usb
from drivers.voice import AplaySpeaker, BoardAnnouncer, VoiceDriver, WavSink

if TYPE_CHECKING:
    from edge.assembly import BoxContext


class _Sims:
    """Starts every simulator before any driver opens it."""

    name = "hall-device-sims"

    def __init__(self, sims: list[Any]) -> None:
        self.sims = sims
        self.control_entry: dict[str, Any] | None = None  # sim.json entry of the keypad line

    async def start(self) -> None:
        for s in self.sims:
            await s.start()
            if isinstance(s, KeypadBusSim) and self.control_entry is not None:
                self.control_entry["control"] = f"127.0.0.1:{await s.serve_control()}"

    async def stop(self) -> None:
        for s in self.sims:
            await s.stop()


def build(ctx: BoxContext) -> list[Any]:
    dev = ctx.runtime.config.devices
    if not ctx.devices:
        return []
    v = dev.voice if dev is not None and dev.voice else None
    ctx.services.announcer = BoardAnnouncer(ctx.data_dir / "voice-board",
                                            voice=v.voice if v else "cmn",
                                            speed=v.speed if v else 175)
    if dev is None:
        return []
    rt = ctx.runtime
    comps: list[Any] = []
    sims: list[Any] = []
    sim_group: _Sims | None = None
    if ctx.sim:
        dev_dir = ctx.data_dir / "dev"
        for p in dev.printers:
            if p.port.startswith("usb://"):
                # No USB bus here: the printer is simulated at the libusb layer, in process.
                ps: PrinterSim = UsbPrinterSim(dev_dir, p.id, parse_usb(p.port))
            else:
                ps = PrinterSim(dev_dir, p.id, tcp=p.port.startswith("tcp://"))
            sims.append(ps)
        for b in dev.buses:
            boards = {x.address: x.protocol for x in dev.boards if x.bus == b.id}
            pads = [x.address for x in dev.keypads if x.bus == b.id]
            if boards:
                sims.append(BoardBusSim(dev_dir, b.id, boards))
            elif pads:
                sims.append(KeypadBusSim(dev_dir, b.id, pads))
        sim_group = _Sims(sims)
        comps.append(sim_group)
        ctx.sims.extend(sims)
    printers = []
    for p in dev.printers:
        sim = next((s for s in sims if getattr(s, "device_id", None) == p.id), None)
        printers.append(TicketPrinter(rt, p, port=sim.link_endpoint if sim else None))
    buses = {}
    for b in dev.buses:
        if not any(x.bus == b.id for x in [*dev.boards, *dev.keypads]):
            continue  # a line of other devices (4-key evaluators): its own builder owns it
        sim = next((s for s in sims if getattr(s, "bus_id", None) == b.id), None)
        buses[b.id] = SharedBus(b.id, sim.endpoint if sim else b.port, b.baudrate)
    if printers:
        comps += printers
        desk = PrintDeskImpl(rt, printers)
        ctx.services.print_desk = desk
        comps.append(desk)
    if dev.boards:
        comps.append(BoardDriver(rt, dev.boards, buses))
    if dev.keypads:
        comps.append(KeypadDriver(rt, dev.keypads, buses))
    if dev.voice:
        if ctx.sim:
            speaker: Any = WavSink(ctx.data_dir / "voice")
        else:
            speaker = {z.id: AplaySpeaker(z.output) for z in dev.voice.zones}
        comps.append(VoiceDriver(rt, dev.voice, speaker, ctx.data_dir / "voice-cache"))
    comps += list(buses.values())
    for s in sims:
        entry = {"class": s.device_class, "id": getattr(s, "device_id", None) or s.bus_id,
                 "endpoint": s.endpoint}
        ctx.sim_devices.append(entry)
        if isinstance(s, KeypadBusSim) and sim_group and sim_group.control_entry is None:
            # Where a person (or script) presses keys in the demo; see drivers/sim/keypad.py.
            sim_group.control_entry = entry
    return comps
