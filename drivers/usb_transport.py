"""USB printer-class transport for `drivers.base.Link`: pyusb over libusb-1.0.

A USB printer is named by `usb://VVVV:PPPP` (vendor:product in hex), optionally narrowed with
`?serial=...` (two identical printers on one box) and pinned with `interface=N`, `out=0xNN`,
`in=0xNN` for printers whose descriptors are odd. Without them the first interface with a bulk
OUT endpoint (the printer class, 7, preferred) and its bulk endpoints are used.

`UsbPort` is the blocking half: find the device in enumeration, detach the kernel's usblp if it
holds the interface, claim it, write ESC/POS to bulk OUT, read DLE EOT answers from bulk IN with
a short timeout. Link runs these calls on its own threads and turns every error into its one
failure path, so a USB printer is supervised exactly like a serial or network one.
"""

from __future__ import annotations

import contextlib
import errno
import time
from typing import Any

import usb.core
import usb.util

from edge.config.usb_address import UsbAddress, parse_usb

__all__ = ["UsbAddress", "UsbPort", "is_timeout", "parse_usb"]

PRINTER_CLASS = 7


def is_timeout(e: BaseException) -> bool:
    return isinstance(e, usb.core.USBTimeoutError) or getattr(e, "errno", None) == errno.ETIMEDOUT


class UsbPort:
    """One opened USB printer. Every method blocks: call them off the loop thread."""

    def __init__(self, dev: Any, interface: int, ep_out: int, ep_in: int | None) -> None:
        self.dev = dev
        self.interface = interface
        self.ep_out = ep_out
        self.ep_in = ep_in

    @classmethod
    def open(cls, addr: UsbAddress, backend: Any = None) -> UsbPort:
        """Find, configure, claim. Raises FileNotFoundError when it is not enumerated."""
        def match(d: Any) -> bool:
            if addr.serial is None:
                return True
            try:
                return bool(d.serial_number == addr.serial)
            except (usb.core.USBError, ValueError):
                return False  # no string descriptors (or no permission): not ours

        dev = usb.core.find(idVendor=addr.vendor, idProduct=addr.product, backend=backend,
                            custom_match=match)
        if dev is None:
            raise FileNotFoundError(errno.ENOENT, "not enumerated on the USB bus", str(addr))
        try:
            try:
                cfg = dev.get_active_configuration()
            except usb.core.USBError:
                dev.set_configuration()  # unconfigured (bConfigurationValue 0)
                cfg = dev.get_active_configuration()
            intf = cls._pick_interface(cfg, addr)
            n = intf.bInterfaceNumber
            with contextlib.suppress(NotImplementedError):  # backends without the call
                if dev.is_kernel_driver_active(n):
                    # usblp holds printers by default; we speak ESC/POS ourselves.
                    dev.detach_kernel_driver(n)
            usb.util.claim_interface(dev, n)
            ep_out, ep_in = cls._pick_endpoints(intf, addr)
        except BaseException:
            with contextlib.suppress(Exception):
                usb.util.dispose_resources(dev)
            raise
        return cls(dev, n, ep_out, ep_in)

    @staticmethod
    def _pick_interface(cfg: Any, addr: UsbAddress) -> Any:
        intfs = list(cfg)
        if addr.interface is not None:
            for i in intfs:
                if i.bInterfaceNumber == addr.interface:
                    return i
            raise LookupError(f"{addr}: no interface {addr.interface}")

        def bulk_out(i: Any) -> bool:
            return any(usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
                       and usb.util.endpoint_direction(e.bEndpointAddress)
                       == usb.util.ENDPOINT_OUT for e in i)

        usable = [i for i in intfs if bulk_out(i)]
        usable.sort(key=lambda i: i.bInterfaceClass != PRINTER_CLASS)
        if not usable:
            raise LookupError(f"{addr}: no interface with a bulk OUT endpoint")
        return usable[0]

    @staticmethod
    def _pick_endpoints(intf: Any, addr: UsbAddress) -> tuple[int, int | None]:
        bulk = [e.bEndpointAddress for e in intf
                if usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK]
        outs = [a for a in bulk if not a & 0x80]
        ins = [a for a in bulk if a & 0x80]
        ep_out = addr.ep_out if addr.ep_out is not None else (outs[0] if outs else None)
        ep_in = addr.ep_in if addr.ep_in is not None else (ins[0] if ins else None)
        if ep_out is None or ep_out not in outs:
            raise LookupError(f"{addr}: no bulk OUT endpoint {ep_out!r} on interface "
                              f"{intf.bInterfaceNumber}")
        if ep_in is not None and ep_in not in ins:
            raise LookupError(f"{addr}: no bulk IN endpoint 0x{ep_in:02x}")
        return ep_out, ep_in  # a unidirectional printer (no IN) never answers DLE EOT

    def describe(self) -> str:
        d = self.dev
        return (f"usb bus {d.bus} addr {d.address} {d.idVendor:04x}:{d.idProduct:04x} "
                f"if {self.interface}")

    def write(self, data: bytes, timeout_ms: int) -> int:
        return int(self.dev.write(self.ep_out, data, timeout_ms))

    def read(self, size: int, timeout_ms: int) -> bytes:
        """Up to `size` bytes from bulk IN; b"" on timeout (the printer had nothing to say)."""
        if self.ep_in is None:
            time.sleep(timeout_ms / 1000)  # nothing to read, ever: just pace the reader
            return b""
        try:
            return bytes(self.dev.read(self.ep_in, size, timeout_ms))
        except Exception as e:
            if is_timeout(e):
                return b""
            raise

    def close(self) -> None:
        """Release and drop the handle; errors ignored (the device may already be gone)."""
        with contextlib.suppress(Exception):
            usb.util.release_interface(self.dev, self.interface)
        with contextlib.suppress(Exception):
            usb.util.dispose_resources(self.dev)
