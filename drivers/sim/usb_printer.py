"""A simulated USB ESC/POS ticket printer, as a pyusb backend.

This is a stand-in at the libusb layer, because this machine has no USB bus (no /sys/bus/usb,
no /dev/bus/usb): no real or emulated (USB/IP, dummy_hcd, gadget) device can be attached here.
`SimUsbBackend` implements `usb.backend.IBackend` in place of libusb-1.0, so everything above
it is the production code unchanged: `usb.core.find`, descriptor parsing, claim, the driver's
`UsbPort` and `Link`. The bytes on the endpoints are the real protocol: bulk OUT carries the
host's ESC/POS into the SAME decoder the pty printer simulator uses (`PrinterSim`, whose
decoding, rendering and paper/cover logic this class inherits), bulk IN carries the real DLE EOT
status bytes, and control transfers answer the standard GET_DESCRIPTOR/GET_CONFIGURATION
requests and the printer class's GET_DEVICE_ID and GET_PORT_STATUS with real descriptor bytes.

Like a real device on Linux it enumerates with the kernel's usblp bound to its interface (claim
fails with EBUSY until the driver detaches it), gets a new bus address on every plug, and
`unplug()` makes it vanish from enumeration while every open handle fails with ENODEV.

Threads: the driver calls the backend from its own threads; host bytes are handed to the
simulator on the event loop (as the pty simulator receives them), replies are queued for
bulk IN under a lock.
"""

from __future__ import annotations

import array
import asyncio
import errno
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from drivers.base import Endpoint
from drivers.sim.printer import PrinterSim
from drivers.usb_transport import UsbAddress

EP_OUT = 0x01
EP_IN = 0x82
MAX_PACKET = 64
STRINGS = {1: "EPSON", 2: "TM-T20 Receipt"}
SERIAL_INDEX = 3


def _err(name: str, code: int, errno_: int) -> usb.core.USBError:
    return usb.core.USBError(name, code, errno_)


def _gone() -> usb.core.USBError:
    return _err("No such device (it may have been disconnected)", -4, errno.ENODEV)


def _pipe() -> usb.core.USBError:
    return _err("Pipe error", -9, errno.EPIPE)


@dataclass(eq=False)
class _Plugged:
    """One enumeration of the device: each plug is a new one, with a new bus address."""

    address: int
    gone: bool = False
    configuration: int = 1  # Linux configures a device on enumeration
    kernel_driver: bool = True  # usblp binds to a printer-class interface
    claimed_by: Any = None
    inbuf: bytearray = field(default_factory=bytearray)


@dataclass(eq=False)
class _Handle:
    dev: _Plugged
    closed: bool = False


class SimUsbBackend(usb.backend.IBackend):
    """libusb's place, for one simulated printer."""

    def __init__(self, sim: UsbPrinterSim) -> None:
        super().__init__()
        self.sim = sim

    # ---- descriptors --------------------------------------------------------------------
    def enumerate_devices(self) -> Iterator[_Plugged]:
        with self.sim.lock:
            cur = self.sim.plugged_dev
        if cur is not None:
            yield cur

    def get_device_descriptor(self, dev: _Plugged) -> SimpleNamespace:
        a = self.sim.address
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=a.vendor, idProduct=a.product,
            bcdDevice=0x0100, iManufacturer=1, iProduct=2,
            iSerialNumber=SERIAL_INDEX if a.serial else 0, bNumConfigurations=1,
            address=dev.address, bus=1, port_number=1, port_numbers=(1,), speed=2)

    def get_configuration_descriptor(self, dev: _Plugged, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError("no such configuration")
        return SimpleNamespace(
            bLength=9, bDescriptorType=2, wTotalLength=9 + 9 + 7 + 7, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0xC0, bMaxPower=50,
            extra_descriptors=[])

    def get_interface_descriptor(self, dev: _Plugged, intf: int, alt: int,
                                 config: int) -> SimpleNamespace:
        if (config, intf, alt) != (0, 0, 0):
            raise IndexError("no such interface")
        # Printer class 7, subclass 1, protocol 2: bidirectional (status comes back on IN).
        return SimpleNamespace(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=2, bInterfaceClass=7, bInterfaceSubClass=1, bInterfaceProtocol=2,
            iInterface=0, extra_descriptors=[])

    def get_endpoint_descriptor(self, dev: _Plugged, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        if (config, intf, alt) != (0, 0, 0) or ep not in (0, 1):
            raise IndexError("no such endpoint")
        return SimpleNamespace(
            bLength=7, bDescriptorType=5, bEndpointAddress=(EP_OUT, EP_IN)[ep],
            bmAttributes=0x02, wMaxPacketSize=MAX_PACKET, bInterval=0, bRefresh=0,
            bSynchAddress=0, extra_descriptors=[])

    def _descriptor_bytes(self, dev: _Plugged, kind: int, index: int) -> bytes:
        """GET_DESCRIPTOR answers, packed from the same descriptors as above (USB 2.0 ch. 9)."""
        if kind == 1:
            d = self.get_device_descriptor(dev)
            return struct.pack("<BBHBBBBHHHBBBB", 18, 1, d.bcdUSB, 0, 0, 0, 64, d.idVendor,
                               d.idProduct, d.bcdDevice, 1, 2, d.iSerialNumber, 1)
        if kind == 2 and index == 0:
            out = struct.pack("<BBHBBBBB", 9, 2, 32, 1, 1, 0, 0xC0, 50)
            out += struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 2, 7, 1, 2, 0)
            for addr in (EP_OUT, EP_IN):
                out += struct.pack("<BBBBHB", 7, 5, addr, 0x02, MAX_PACKET, 0)
            return out
        if kind == 3:
            if index == 0:
                return bytes([4, 3, 0x09, 0x04])  # LANGID en-US
            text = STRINGS.get(index)
            if index == SERIAL_INDEX and self.sim.address.serial:
                text = self.sim.address.serial
            if text is not None:
                body = text.encode("utf-16-le")
                return bytes([2 + len(body), 3]) + body
        raise _pipe()  # a real device stalls an unknown request

    # ---- handles ------------------------------------------------------------------------
    def _live(self, h: _Handle) -> _Plugged:
        if h.closed or h.dev.gone:
            raise _gone()
        return h.dev

    def open_device(self, dev: _Plugged) -> _Handle:
        if dev.gone:
            raise _gone()
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        with self.sim.lock:
            if dev_handle.dev.claimed_by is dev_handle:
                dev_handle.dev.claimed_by = None
            dev_handle.closed = True

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        dev = self._live(dev_handle)
        if config_value not in (0, 1):
            raise _err("Entity not found", -5, errno.ENOENT)
        dev.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        return self._live(dev_handle).configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._live(dev_handle)
        if (intf, altsetting) != (0, 0):
            raise _err("Entity not found", -5, errno.ENOENT)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        with self.sim.lock:
            dev = self._live(dev_handle)
            if intf != 0:
                raise _err("Entity not found", -5, errno.ENOENT)
            if dev.kernel_driver or dev.claimed_by not in (None, dev_handle):
                raise _err("Resource busy", -6, errno.EBUSY)
            dev.claimed_by = dev_handle

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        with self.sim.lock:
            dev = self._live(dev_handle)
            if dev.claimed_by is dev_handle:
                dev.claimed_by = None

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return self._live(dev_handle).kernel_driver

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        with self.sim.lock:
            dev = self._live(dev_handle)
            if not dev.kernel_driver:
                raise _err("Entity not found", -5, errno.ENOENT)
            dev.kernel_driver = False
            self.sim.detaches += 1

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        with self.sim.lock:
            self._live(dev_handle).kernel_driver = True

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._live(dev_handle)

    def reset_device(self, dev_handle: _Handle) -> None:
        self._live(dev_handle)

    # ---- transfers ----------------------------------------------------------------------
    def _claimed(self, h: _Handle, ep: int, want: int) -> _Plugged:
        dev = self._live(h)
        if dev.claimed_by is not h:
            raise _err("Entity not found", -5, errno.ENOENT)  # usbfs refuses unclaimed
        if ep != want:
            raise _pipe()
        return dev

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: array.array[int],
                   timeout: int) -> int:
        with self.sim.lock:
            dev = self._claimed(dev_handle, ep, EP_OUT)
            fault = self.sim.fail_next_write
            if fault is not None and self.sim.fail_write_if in bytes(data):
                self.sim.fail_next_write = None
            else:
                fault = None
        if fault is not None:
            raise _err(f"injected: {errno.errorcode.get(fault, fault)}", -1, fault)
        payload = bytes(data)
        self.sim.host_bytes(dev, payload)
        return len(payload)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int],
                  timeout: int) -> int:
        with self.sim.lock:
            dev = self._claimed(dev_handle, ep, EP_IN)
            if not dev.inbuf:
                self.sim.lock.wait_for(lambda: bool(dev.inbuf) or dev.gone
                                       or dev_handle.closed, (timeout or 1000) / 1000)
            self._live(dev_handle)
            if not dev.inbuf:
                raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
            n = min(len(buff), len(dev.inbuf))
            buff[:n] = array.array("B", dev.inbuf[:n])
            del dev.inbuf[:n]
            return n

    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int,
                      wValue: int, wIndex: int, data: array.array[int],
                      timeout: int) -> int:
        with self.sim.lock:
            dev = self._live(dev_handle)
            if (bmRequestType, bRequest) == (0x80, 6):  # GET_DESCRIPTOR
                reply = self._descriptor_bytes(dev, wValue >> 8, wValue & 0xFF)
            elif (bmRequestType, bRequest) == (0x80, 8):  # GET_CONFIGURATION
                reply = bytes([dev.configuration])
            elif (bmRequestType, bRequest) == (0xA1, 0):  # printer class GET_DEVICE_ID
                a = self.sim.address
                ident = (f"MFG:EPSON;CMD:ESCPOS;MDL:TM-T20;CLS:PRINTER;"
                         f"SN:{a.serial or ''};").encode("ascii")
                reply = struct.pack(">H", len(ident) + 2) + ident
            elif (bmRequestType, bRequest) == (0xA1, 1):  # printer class GET_PORT_STATUS
                st = self.sim.status()
                # IEEE 1284 bits: 5 paper empty, 4 selected, 3 not error.
                reply = bytes([(0x20 if st.paper_end else 0) | 0x10
                               | (0 if st.paper_end or st.cover_open else 0x08)])
            else:
                raise _pipe()
        n = min(len(data), len(reply))
        data[:n] = array.array("B", reply[:n])
        return n


class UsbPrinterSim(PrinterSim):
    """The pty printer simulator's decoder and paper, behind a USB printer-class interface."""

    def __init__(self, dev_dir: Path, device_id: str,
                 address: UsbAddress | None = None) -> None:
        super().__init__(dev_dir, device_id)
        self.address = address or UsbAddress(0x04B8, 0x0202, serial=f"SIM{device_id}")
        self.lock = threading.Condition()
        self.plugged_dev: _Plugged | None = None
        self.backend = SimUsbBackend(self)
        self.plugs = 0
        self.detaches = 0
        # Fault injection: the next bulk OUT transfer (containing `fail_write_if`, if set)
        # fails with this errno (EIO, EPIPE ...).
        self.fail_next_write: int | None = None
        self.fail_write_if: bytes = b""
        self._next_address = 1
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def endpoint(self) -> str:
        return str(self.address)

    @property
    def link_endpoint(self) -> Endpoint:
        return Endpoint(usb=self.address, usb_backend=self.backend)

    async def plug(self) -> None:
        self._loop = asyncio.get_running_loop()
        with self.lock:
            if self.plugged_dev is None:
                self._next_address = self._next_address % 127 + 1
                self.plugged_dev = _Plugged(address=self._next_address)
                self.plugs += 1

    async def unplug(self) -> None:
        with self.lock:
            if self.plugged_dev is not None:
                self.plugged_dev.gone = True
                self.plugged_dev = None
                self.lock.notify_all()  # wake blocked bulk reads: they fail with ENODEV

    def host_bytes(self, dev: _Plugged, data: bytes) -> None:
        """From the driver's thread: bulk OUT bytes go to the decoder on the loop thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._arrive, dev, data)

    def _arrive(self, dev: _Plugged, data: bytes) -> None:
        if dev is self.plugged_dev:  # bytes in flight when the cable was pulled are lost
            self._on_bytes(data)

    def _reply(self, data: bytes, writer: asyncio.StreamWriter | None) -> None:
        with self.lock:
            dev = self.plugged_dev
            if dev is not None:
                dev.inbuf += data
                self.lock.notify_all()
