"""The ESC/POS decoder (the printer simulator's) and encoder against python-escpos (PyPI), an
independent ESC/POS implementation.

- Tickets python-escpos renders with its Dummy printer (text styles, native QR, cut) decode
  with every style honoured and no command letter printed as text.
- python-escpos drives the simulated printer over its pseudo-terminal with its Serial printer,
  and reads the simulator's DLE EOT answers with its own status parsing.
- Our encoder's style, QR, feed and status-request sequences equal python-escpos's bytes for the
  same settings.

An independent ESC/POS *decoder* to check our encoder with was looked for on PyPI: `emupos`
(a printer emulator with an ESC/POS tokenizer) requires Python >= 3.13 and this project runs
on 3.11, so it cannot be used here; no other decoder was found.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from escpos.constants import QR_ECLEVEL_M, RT_STATUS_ONLINE, RT_STATUS_PAPER
from escpos.printer import Dummy, Serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.protocols import escpos as ours
from drivers.protocols.escpos import Cut, EscPosDecoder, Line, QrCode
from drivers.sim.printer import PrinterSim


def lines(elements: list) -> list[Line]:
    return [e for e in elements if isinstance(e, Line)]


def decode(raw: bytes) -> tuple[list, EscPosDecoder]:
    d = EscPosDecoder()
    return d.feed(raw), d


def styled(**style: object) -> bytes:
    p = Dummy()
    p.hw("INIT")
    p.set(**style)
    p.text("A012\n")
    return p.output


@pytest.mark.parametrize("style,expect", [
    ({"underline": 1}, {"underline": 1}),
    ({"underline": 2}, {"underline": 2}),
    ({"font": "b"}, {"font": 1}),
    ({"invert": True}, {"reverse": True}),
    ({"bold": True}, {"bold": True}),
    ({"double_height": True}, {"height": 2, "width": 1}),
    ({"double_width": True}, {"width": 2, "height": 1}),
    ({"double_height": True, "double_width": True}, {"width": 2, "height": 2}),
    ({"custom_size": True, "width": 3, "height": 4}, {"width": 3, "height": 4}),
    ({"align": "right"}, {"align": 2}),
    ({"flip": True}, {"upside_down": True}),
    ({"smooth": True, "bold": True, "underline": 1, "font": "b", "invert": True,
      "align": "center", "double_height": True},
     {"smooth": None, "bold": True, "underline": 1, "font": 1, "reverse": True, "align": 1,
      "height": 2}),
])
def test_python_escpos_styles_are_commands_not_text(style, expect):
    els, d = decode(styled(**style))
    (line,) = lines(els)
    assert line.text == "A012"  # not "-\x01A012", "M\x01A012", "B\x01A012" …
    for k, v in expect.items():
        if v is not None:
            assert getattr(line, k) == v, (style, k)
    assert d.stats.unknown == 0 and d.stats.bad_text == 0


def test_python_escpos_ticket_with_native_qr_and_cut():
    p = Dummy()
    p.hw("INIT")
    p.set(align="center", bold=True, double_height=True, double_width=True)
    p.text("Service Hall\n")
    p.set_with_default(align="center")
    p.set(custom_size=True, width=3, height=3)
    p.text("A012\n")
    p.set_with_default()
    p.text("3 ahead of you\n")
    p.qr("https://zwfw.example.gov.cn/q/A012", native=True, size=6, ec=QR_ECLEVEL_M)
    p.barcode("A012", "CODE39", function_type="A")
    p.print_and_feed(2)
    p.cut()
    els, d = decode(p.output)
    assert [(ln.text, ln.width, ln.height, ln.bold, ln.align) for ln in lines(els)
            if ln.text] == [("Service Hall", 2, 2, True, 1), ("A012", 3, 3, False, 1),
                            ("3 ahead of you", 1, 1, False, 0)]
    assert QrCode("https://zwfw.example.gov.cn/q/A012", 6) in els
    assert isinstance(els[-1], Cut)
    assert d.stats.unknown == 0 and d.stats.oversized == 0 and d.stats.bad_text == 0
    # In any split across reads, the same ticket.
    d2, got = EscPosDecoder(), []
    for i in range(0, len(p.output), 7):
        got += d2.feed(p.output[i:i + 7])
    assert got == els


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "align": st.sampled_from(["left", "center", "right"]), "font": st.sampled_from(["a", "b"]),
    "bold": st.booleans(), "underline": st.integers(0, 2), "invert": st.booleans(),
    "flip": st.booleans(), "double_height": st.booleans(), "double_width": st.booleans(),
    "smooth": st.booleans()}), st.text(alphabet="ABCDEFGHIJ0123456789 -#:", min_size=1,
                                       max_size=30), st.lists(st.integers(1, 9), max_size=6))
def test_any_python_escpos_style_prints_only_the_text(style, body, cuts):
    p = Dummy()
    p.set(**style)
    p.text(body + "\n")
    raw = p.output
    d, got, i = EscPosDecoder(), [], 0
    for c in [*cuts, len(raw)]:
        got += d.feed(raw[i:i + c])
        i += c
    got += d.feed(raw[i:])
    assert [ln.text for ln in lines(got)] == [body]
    assert d.stats.unknown == 0


class Counter:
    """The printer simulator's loop in a thread: python-escpos is a blocking client."""

    def __init__(self, sim: PrinterSim) -> None:
        self.sim = sim
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(sim.start(), self.loop).result(5)

    def wait_ticket(self, n: int) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.wait_ticket(n), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_python_escpos_serial_prints_on_the_simulator_and_reads_its_status(tmp_path: Path):
    counter = Counter(PrinterSim(tmp_path / "dev", "kiosk-1"))
    sim = counter.sim
    try:
        # python-escpos reads 16 bytes or until the timeout: each query takes the timeout.
        p = Serial(devfile=sim.endpoint, baudrate=115200, timeout=0.5, dsrdtr=False)
        p.open()
        try:
            assert p.is_online() and p.paper_status() == 2
            sim.near_end = True
            assert p.paper_status() == 1
            sim.near_end, sim.paper_end = False, True
            assert p.paper_status() == 0 and not p.is_online()
            sim.paper_end = False
            p.set(align="center", underline=1, font="b", invert=True)
            p.text("A012\n")
            p.set_with_default()
            p.qr("A012", native=True, size=5)
            p.cut()
            counter.wait_ticket(1)
        finally:
            p.close()
        ticket = sim.tickets[0]
        (line,) = lines(ticket)
        assert (line.text, line.align, line.underline, line.font, line.reverse) == \
            ("A012", 1, 1, 1, True)
        assert QrCode("A012", 5) in ticket
        assert sim.status_queries == 5 and sim.decoder.stats.unknown == 0
    finally:
        counter.close()


def test_our_encoder_matches_python_escpos_bytes():
    payload = "https://zwfw.example.gov.cn/q/20261123-A023"
    p = Dummy()
    p.qr(payload, native=True, size=6, ec=QR_ECLEVEL_M, model=2)
    assert ours.qr_native(payload, module=6, ecc="M") == p.output
    for where in ("left", "center", "right"):
        p = Dummy()
        p.set(align=where)
        assert ours.align(where) in p.output
    for w, h in ((1, 1), (2, 2), (3, 3), (8, 8), (2, 5)):
        p = Dummy()
        p.set(custom_size=True, width=w, height=h)
        assert ours.size(w, h) in p.output
    p = Dummy()
    p.set(bold=True)
    assert ours.bold(True) in p.output
    p = Dummy()
    p.print_and_feed(3)
    assert ours.feed(3) == p.output
    assert ours.status_request(1) == RT_STATUS_ONLINE
    assert ours.status_request(4) == RT_STATUS_PAPER
    p = Dummy()
    p.hw("INIT")
    assert ours.INIT == p.output


commands = st.tuples(st.sampled_from([0x1B, 0x1D, 0x1C, 0x10]), st.integers(0, 255),
                     st.binary(max_size=12)).map(lambda t: bytes([t[0], t[1]]) + t[2])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(commands, st.binary(max_size=20), st.just(b"A012\n")), max_size=30),
       st.lists(st.integers(1, 50), max_size=10))
def test_command_soup_decodes_the_same_in_any_chunking_and_stays_bounded(parts, cuts):
    raw = b"".join(parts)
    whole = EscPosDecoder()
    expect = whole.feed(raw)
    d, got, i = EscPosDecoder(), [], 0
    for c in [*cuts, len(raw)]:
        got += d.feed(raw[i:i + c])
        i += c
        assert len(d._buf) <= 8 + ours.RASTER_MAX_BYTES
    got += d.feed(raw[i:])
    assert got == expect
    assert d.stats == whole.stats
