"""[devices.*] for the calling devices: ticket printers, LED boards, voice, caller keypads.

Serial devices name their port by a stable path (/dev/serial/by-id/... or a udev symlink); the
driver resolves it again on every reconnect, so a replugged adapter with a new /dev/ttyUSBn is
found. A network printer is `tcp://host:9100`; a USB printer-class printer (no serial adapter)
is `usb://vendor:product`, with `?serial=...` to tell identical printers apart.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config.base import Strict
from edge.config.usb_address import parse_usb

_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_TCP = re.compile(r"^tcp://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$")


def check_port(v: str) -> str:
    """A device path (/dev/...) or tcp://host:port."""
    if v.startswith("tcp://"):
        m = _TCP.match(v)
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(f"expected tcp://host:port, got {v!r}")
        return v
    if not v.startswith("/"):
        raise ValueError(f"expected an absolute device path or tcp://host:port, got {v!r}")
    return v


def check_printer_port(v: str) -> str:
    """A serial path, tcp://host:port, or usb://vendor:product[?serial=...]."""
    if v.startswith("usb://"):
        parse_usb(v)
        return v
    if not v.startswith(("/", "tcp://")):
        raise ValueError(f"expected an absolute device path, tcp://host:port or "
                         f"usb://vendor:product, got {v!r}")
    return check_port(v)


class PrinterConfig(Strict):
    id: str = Field(pattern=_ID)
    port: str = Field(description="/dev/serial/by-id/..., tcp://host:9100 or usb://04b8:0202")
    baudrate: int = Field(default=9600, ge=1200, le=921600)
    # Which kiosk (API token name) prints here; None: the hall's default printer.
    kiosk: str | None = None
    qr: Literal["native", "image", "none"] = "native"
    qr_url: str = Field(default="https://zwfw.example.gov.cn/q/{ticket}", max_length=200)
    footer: str = Field(default="请留意叫号，过号请重新取号", max_length=120)
    width_chars: int = Field(default=32, ge=16, le=64, description="ASCII columns of the paper")

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        return check_printer_port(v)


class BusConfig(Strict):
    """One RS-485 line (a USB-RS485 adapter): many boards or keypads, each with an address."""

    id: str = Field(pattern=_ID)
    port: str
    baudrate: int = Field(default=9600, ge=1200, le=921600)

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        return check_port(v)


class BoardConfig(Strict):
    id: str = Field(pattern=_ID)
    bus: str
    protocol: Literal["bx5", "at"]
    address: int = Field(ge=1, le=254)
    # A window board shows that window's call; the main board shows the latest calls.
    window: int | None = Field(default=None, ge=1, le=9999)
    main: bool = False
    idle_text: str = Field(default="欢迎光临", max_length=64)

    @model_validator(mode="after")
    def _kind(self) -> BoardConfig:
        if self.main == (self.window is not None):
            raise ValueError("a board is either a window board (window = N) or main = true")
        return self


class KeypadConfig(Strict):
    id: str = Field(pattern=_ID)
    bus: str
    address: int = Field(ge=1, le=254)
    window: int = Field(ge=1, le=9999)


class VoiceZone(Strict):
    id: str = Field(pattern=_ID)
    windows: list[int] = Field(min_length=1)
    # ALSA device for aplay (e.g. "plughw:1,0"); None: the default output.
    output: str | None = None


class VoiceConfig(Strict):
    voice: str = Field(default="cmn", description="espeak-ng voice")
    speed: int = Field(default=175, ge=80, le=300, description="words per minute")
    repeat: int = Field(default=2, ge=1, le=3, description="times each call is spoken")
    # Past this many queued announcements in a zone, repeats are dropped first.
    backlog_drop_repeats: int = Field(default=2, ge=0, le=100)
    # An announcement later than this behind its board is skipped and counted: the board is
    # the truth.
    max_lag_seconds: int = Field(default=30, ge=1, le=600)
    zones: list[VoiceZone] = Field(min_length=1)

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[VoiceZone]) -> list[VoiceZone]:
        ids = [z.id for z in v]
        if len(set(ids)) != len(ids):
            raise ValueError("zone ids must be unique")
        return v
