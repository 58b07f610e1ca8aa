"""USB ticket printers: the pyusb transport of drivers/usb_transport.py inside Link.

This machine has no USB bus (no /sys/bus/usb, no /dev/bus/usb), so no real or emulated USB
device can be attached. These tests use a stand-in at the libusb layer: drivers/sim/usb_printer.py
is a pyusb backend (`usb.backend.IBackend`) in libusb's place. It is a mock only in that sense:
everything above it is the production code (usb.core.find, descriptors, kernel-driver detach,
claim, UsbPort, Link, TicketPrinter), and the bytes on the endpoints are the real protocol:
ESC/POS on bulk OUT decoded by the same decoder as the pty printer simulator, real DLE EOT
status bytes on bulk IN, real descriptor bytes on the control endpoint.
"""

from __future__ import annotations

import asyncio
import errno
import tomllib
from pathlib import Path

import pytest
import usb.core
import usb.util
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import Endpoint, Link
from drivers.protocols.escpos import status_request
from drivers.sim.harness import EXAMPLE, example_config, running_hall
from drivers.sim.usb_printer import UsbPrinterSim
from drivers.usb_transport import UsbAddress, UsbPort, parse_usb
from edge.config import ConfigError, HallConfig, parse_config
from tests.waiting import poll as _until

USB_PORT = "usb://04b8:0202?serial=J8GF012345"
DEVICE = "printer-kiosk-1"
CYCLES = 20
RECOVER_S = 2.0


def usb_config(port: str = USB_PORT) -> HallConfig:
    base = example_config()
    assert base.devices is not None
    p = base.devices.printers[0].model_copy(update={"port": port})
    return example_config(printers=[p])




def _health(hall, device: str = DEVICE) -> tuple[bool, str | None]:
    h = hall.rt.health.current[device]
    return h.online, h.grade


# ---- end to end through the kiosk API ---------------------------------------------------

def test_kiosk_ticket_over_usb_prints_chinese_text_and_qr(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path, usb_config()) as hall:
            sim = hall.printer
            assert isinstance(sim, UsbPrinterSim)
            assert sim.port.master is None  # no pty anywhere: the bytes went over USB
            link = hall.links()[0]
            assert link.endpoint.usb == parse_usb(USB_PORT)
            assert link.resolved and link.resolved.startswith("usb bus 1 addr")
            assert sim.detaches == 1  # usblp held the interface; the driver took it over
            t = await hall.take_ticket("SHMS")
            assert t["number"] == "A001"
            assert t["printer"]["printed"] is True, t["printer"]
            assert t["printer"]["status"] == "ok"  # DLE EOT answered on bulk IN
            await sim.wait_ticket(1)
            text = sim.text()
            for part in ("天河区政务服务中心", "社会民生", "A 0 0 1", "您前面还有 0 人",
                         "请留意叫号，过号请重新取号", "2026-11-23 09:00"):
                assert part in text, f"{part!r} not on the ticket:\n{text}"
            assert sim.qr() == f"https://zwfw.example.gov.cn/q/{t['id']}"
            assert sim.decoder.stats.bad_text == 0
            assert sim.status_queries >= 2
            assert _health(hall) == (True, None)
            sim_json = [e for e in hall.ctx.sim_devices if e["id"] == DEVICE]
            assert sim_json == [{"class": "printer", "id": DEVICE, "endpoint": USB_PORT}]

    asyncio.run(go())


def test_paper_end_over_usb_kiosk_says_photograph_and_ticket_is_issued(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path, usb_config()) as hall:
            sim = hall.printer
            sim.paper_end = True
            t = await hall.take_ticket("GA")
            p = t["printer"]
            assert p["printed"] is False and p["status"] == "paper_end", p
            assert "请拍照保存屏幕上的号码" in p["message"]
            assert sim.tickets == [] and sim.discarded == 0  # nothing was even sent
            assert [e["data"]["number"] for e in hall.events("ticket.issued")] == ["E001"]
            assert hall.rt.hall.ticket("E001").state == "waiting"
            assert _health(hall) == (True, "B")
            sim.paper_end = False
            sim.near_end = True
            t = await hall.take_ticket("GA")
            assert t["printer"]["printed"] is True
            assert t["printer"]["status"] == "paper_near_end"
            await sim.wait_ticket(1)
            assert "E002" in sim.text().replace(" ", "")
            assert _health(hall) == (True, "C")

    asyncio.run(go())


# ---- unplug / replug --------------------------------------------------------------------

def test_usb_printer_unplug_replug_20_cycles(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path, usb_config()) as hall:
            sim = hall.printer
            link = hall.links()[0]
            addresses = set()
            loop = asyncio.get_running_loop()
            for i in range(CYCLES):
                await sim.unplug()  # gone from enumeration; open handles fail with ENODEV
                assert await _until(lambda: not link.online, 2.0), f"cycle {i}: not noticed"
                assert _health(hall) == (False, "B")
                t = await hall.take_ticket("SHMS")
                assert t["printer"]["printed"] is False
                assert t["printer"]["status"] == "offline"
                await sim.plug()
                plugged_at = loop.time()
                assert await _until(lambda: link.online, RECOVER_S), f"cycle {i}: not back"
                assert loop.time() - plugged_at <= RECOVER_S
                addresses.add(link.resolved)
                assert await _until(lambda: _health(hall)[0], 1.0)
                t = await hall.take_ticket("SHMS")
                assert t["printer"]["printed"] is True, (i, t["printer"])
                await sim.wait_ticket(i + 1)
                assert t["number"] in sim.text().replace(" ", "")
            # Each plug is a new enumeration with a new bus address, found again by id.
            assert len(addresses) == CYCLES
            assert sim.detaches == CYCLES + 1
            offline = [e for e in hall.events("device.health")
                       if e["data"]["device"] == DEVICE and not e["data"]["online"]]
            assert len(offline) == CYCLES  # one failure per unplug, not one per retry
            issued = hall.events("ticket.issued")
            assert len(issued) == 2 * CYCLES  # every ticket issued, printed or not

    asyncio.run(go())


def test_usb_write_error_is_the_same_failure_and_recovers(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path, usb_config()) as hall:
            sim = hall.printer
            link = hall.links()[0]
            # EIO on the status query; EPIPE on the ticket itself (GS V: the cut).
            for code, on in ((errno.EIO, b"\x10\x04"), (errno.EPIPE, b"\x1dV")):
                before = link.failures
                sim.fail_next_write, sim.fail_write_if = code, on
                t = await hall.take_ticket("SHMS")
                assert t["printer"]["printed"] is False, t["printer"]
                assert t["printer"]["status"] == "offline"
                assert await _until(lambda b=before: link.failures == b + 1, 2.0)
                assert await _until(lambda: link.online, RECOVER_S)
                t = await hall.take_ticket("SHMS")
                assert t["printer"]["printed"] is True, t["printer"]
                assert sim.fail_next_write is None  # the fault really was hit
            assert len(sim.tickets) == 2

    asyncio.run(go())


def test_absent_usb_printer_is_offline_and_found_when_plugged(tmp_path: Path) -> None:
    """Not enumerated at start: the open fails quietly with backoff until it appears."""
    async def go() -> None:
        sim = UsbPrinterSim(tmp_path / "dev", "p1")
        downs: list[str] = []
        link = Link("printer-p1", sim.link_endpoint, on_down=downs.append)
        await link.start()
        await asyncio.sleep(0.3)
        assert not link.online
        assert len(downs) == 1 and "not enumerated" in downs[0]
        await sim.plug()
        assert await link.wait_online(RECOVER_S)
        assert await link.request(status_request(4), 1, 1.0) == b"\x12"
        sim.paper_end = True
        assert await link.request(status_request(4), 1, 1.0) == b"\x72"
        await link.stop()
        await sim.stop()

    asyncio.run(go())


def test_serial_number_selects_the_printer(tmp_path: Path) -> None:
    async def go() -> None:
        sim = UsbPrinterSim(tmp_path / "dev", "p1", parse_usb(USB_PORT))
        await sim.plug()
        wrong = Endpoint(usb=parse_usb("usb://04b8:0202?serial=OTHER"), usb_backend=sim.backend)
        with pytest.raises(FileNotFoundError):
            await asyncio.to_thread(UsbPort.open, wrong.usb, sim.backend)
        other_product = parse_usb("usb://04b8:0e15")
        with pytest.raises(FileNotFoundError):
            await asyncio.to_thread(UsbPort.open, other_product, sim.backend)
        port = await asyncio.to_thread(UsbPort.open, parse_usb(USB_PORT), sim.backend)
        assert (port.interface, port.ep_out, port.ep_in) == (0, 0x01, 0x82)
        # A second opener finds the interface claimed (EBUSY), as with libusb.
        with pytest.raises(usb.core.USBError) as e:
            await asyncio.to_thread(UsbPort.open, parse_usb(USB_PORT), sim.backend)
        assert e.value.errno == errno.EBUSY
        port.close()
        port = await asyncio.to_thread(UsbPort.open, parse_usb(USB_PORT), sim.backend)
        # Pinned endpoints that the interface does not have are refused clearly.
        port.close()
        with pytest.raises(LookupError, match="no bulk OUT endpoint"):
            await asyncio.to_thread(UsbPort.open, parse_usb(USB_PORT + "&out=0x03"),
                                    sim.backend)
        await sim.unplug()

    asyncio.run(go())


def test_sim_descriptors_are_real_descriptor_bytes(tmp_path: Path) -> None:
    """The control endpoint's GET_DESCRIPTOR bytes agree with the parsed descriptors."""
    async def go() -> None:
        sim = UsbPrinterSim(tmp_path / "dev", "p1", parse_usb(USB_PORT))
        await sim.plug()

        def read() -> tuple[bytes, bytes, str, bytes]:
            dev = usb.core.find(idVendor=0x04B8, idProduct=0x0202, backend=sim.backend)
            assert dev is not None
            raw_dev = bytes(dev.ctrl_transfer(0x80, 6, 0x0100, 0, 18))
            raw_cfg = bytes(dev.ctrl_transfer(0x80, 6, 0x0200, 0, 255))
            with pytest.raises(usb.core.USBError) as busy:  # usblp still has interface 0
                dev.ctrl_transfer(0xA1, 0, 0, 0, 1024)
            assert busy.value.errno == errno.EBUSY
            dev.detach_kernel_driver(0)
            ident = bytes(dev.ctrl_transfer(0xA1, 0, 0, 0, 1024))
            serial = dev.serial_number
            with pytest.raises(usb.core.USBError) as e:
                dev.ctrl_transfer(0x80, 6, 0x0700, 0, 10)  # unknown descriptor: stall
            assert e.value.errno == errno.EPIPE
            usb.util.dispose_resources(dev)
            return raw_dev, raw_cfg, serial, ident

        raw_dev, raw_cfg, serial, ident = await asyncio.to_thread(read)
        assert raw_dev[:2] == b"\x12\x01" and raw_dev[8:12] == b"\xb8\x04\x02\x02"
        assert len(raw_cfg) == int.from_bytes(raw_cfg[2:4], "little") == 32
        assert raw_cfg[9 + 5] == 7  # interface class: printer
        assert raw_cfg[18 + 2] == 0x01 and raw_cfg[25 + 2] == 0x82
        assert serial == "J8GF012345"
        assert int.from_bytes(ident[:2], "big") == len(ident)
        assert b"CMD:ESCPOS;" in ident
        await sim.unplug()

    asyncio.run(go())


# ---- config -----------------------------------------------------------------------------

def _raw() -> dict:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_usb_port_in_config_is_accepted() -> None:
    raw = _raw()
    raw["devices"]["printers"][0]["port"] = USB_PORT + "&interface=0&out=0x01&in=0x82"
    cfg = parse_config(raw)
    assert cfg.devices is not None
    assert parse_usb(cfg.devices.printers[0].port) == UsbAddress(
        0x04B8, 0x0202, "J8GF012345", 0, 0x01, 0x82)


@pytest.mark.parametrize(("port", "says"), [
    ("usb://4b8:202", "4 hex digits"),
    ("usb://04b8", "4 hex digits"),
    ("usb://04b8:0202?color=red", "unknown option 'color'"),
    ("usb://04b8:0202?out=0x82", "OUT endpoint"),
    ("usb://04b8:0202?in=0x01", "IN endpoint"),
    ("usb://04b8:0202?interface=one", "not a number"),
    ("usb://04b8:0202?serial=", "empty serial"),
    ("usb://04b8:0202?serial=a&serial=b", "given twice"),
    ("usb:/04b8:0202", "usb://vendor:product"),
])
def test_bad_usb_port_gets_a_clear_error_with_its_key_path(port: str, says: str) -> None:
    raw = _raw()
    raw["devices"]["printers"][0]["port"] = port
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    errs = [str(i) for i in e.value.issues]
    mine = [x for x in errs if x.startswith("devices.printers[0].port")]
    assert mine and says in mine[0], errs


def test_usb_port_is_refused_for_an_rs485_bus() -> None:
    raw = _raw()
    raw["devices"]["buses"][0]["port"] = "usb://0403:6001"
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert any(str(i).startswith("devices.buses[0].port") for i in e.value.issues)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_usb_address_parser_fuzz(tail: str) -> None:
    """Any text: a UsbAddress that prints back to itself, or a ValueError, nothing else."""
    for text in (tail, "usb://" + tail, "usb://04b8:0202?" + tail):
        try:
            a = parse_usb(text)
        except ValueError:
            continue
        assert parse_usb(str(a)) == a


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 0xFFFF), st.integers(0, 0xFFFF),
       st.one_of(st.none(), st.text(min_size=1, max_size=20)),
       st.one_of(st.none(), st.integers(0, 255)))
def test_usb_address_round_trip(vid: int, pid: int, serial: str | None,
                                intf: int | None) -> None:
    a = UsbAddress(vid, pid, serial, intf, 0x01, 0x82)
    assert parse_usb(str(a)) == a

