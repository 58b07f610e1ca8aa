"""The `usb://vendor:product[?serial=...&interface=N&out=0xNN&in=0xNN]` printer address.

Pure parsing, shared by the config check (errors with key paths) and the USB transport
(drivers/usb_transport.py), so both read the string the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

_USB = re.compile(r"^usb://(?P<vid>[0-9A-Fa-f]{4}):(?P<pid>[0-9A-Fa-f]{4})(?:\?(?P<q>.*))?$")
_KEYS = ("serial", "interface", "out", "in")


@dataclass(frozen=True)
class UsbAddress:
    vendor: int
    product: int
    serial: str | None = None
    interface: int | None = None
    ep_out: int | None = None
    ep_in: int | None = None

    def __str__(self) -> str:
        q = []
        if self.serial is not None:
            q.append(f"serial={quote(self.serial, safe='')}")
        if self.interface is not None:
            q.append(f"interface={self.interface}")
        if self.ep_out is not None:
            q.append(f"out=0x{self.ep_out:02x}")
        if self.ep_in is not None:
            q.append(f"in=0x{self.ep_in:02x}")
        tail = "?" + "&".join(q) if q else ""
        return f"usb://{self.vendor:04x}:{self.product:04x}{tail}"


def _int(key: str, v: str) -> int:
    try:
        return int(v, 0)
    except ValueError:
        raise ValueError(f"{key}={v!r} is not a number") from None


def parse_usb(text: str) -> UsbAddress:
    """`usb://04b8:0202[?serial=...&interface=0&out=0x01&in=0x82]`; ValueError says why not."""
    m = _USB.match(text)
    if not m:
        raise ValueError(f"expected usb://vendor:product with 4 hex digits each "
                         f"(e.g. usb://04b8:0202?serial=X1), got {text!r}")
    vid, pid = int(m.group("vid"), 16), int(m.group("pid"), 16)
    if vid == 0:
        raise ValueError(f"vendor id 0000 is not a real USB vendor in {text!r}")
    opts: dict[str, str] = {}
    if m.group("q") is not None:
        try:
            pairs = parse_qsl(m.group("q"), keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(f"bad query {m.group('q')!r} in {text!r}: use key=value&...") from None
        for k, v in pairs:
            if k not in _KEYS:
                raise ValueError(f"unknown option {k!r} in {text!r} (known: {', '.join(_KEYS)})")
            if k in opts:
                raise ValueError(f"option {k!r} given twice in {text!r}")
            opts[k] = v
    serial = opts.get("serial")
    if serial is not None and not serial:
        raise ValueError(f"empty serial in {text!r}")
    intf = _int("interface", opts["interface"]) if "interface" in opts else None
    if intf is not None and not 0 <= intf <= 255:
        raise ValueError(f"interface must be 0..255, got {intf} in {text!r}")
    ep_out = _int("out", opts["out"]) if "out" in opts else None
    if ep_out is not None and not 0x01 <= ep_out <= 0x0F:
        raise ValueError(f"out must be an OUT endpoint address 0x01..0x0f, got {ep_out:#x}")
    ep_in = _int("in", opts["in"]) if "in" in opts else None
    if ep_in is not None and not 0x81 <= ep_in <= 0x8F:
        raise ValueError(f"in must be an IN endpoint address 0x81..0x8f, got {ep_in:#x}")
    return UsbAddress(vid, pid, serial, intf, ep_out, ep_in)
