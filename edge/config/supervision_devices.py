"""[[devices.evaluators]], [[devices.attendance]], [[devices.fingerprints]]: the supervision
devices (satisfaction, presence, identity).

- Evaluators (评价器) are bound to one window each. A tablet logs in over the WebSocket protocol
  with its window number and its device token (only sha256(token) is stored here). A 4-key
  evaluator sits on an RS-485 bus at an address (the FF 68 keypad protocol); a bus that carries
  evaluators carries only evaluators, because one driver owns one bus.
- Attendance terminals (指纹考勤机) are ZKTeco-protocol terminals on the LAN (TCP 4370).
  Names on the terminal are GBK by default (Chinese firmware). Terminal user ids map to staff
  ids through `users`; an unmapped user id is taken as the staff id itself.
- Fingerprint sensors are R30x/AS608 UART modules (EF01 packets) at windows, for staff login
  and spot checks.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config.base import Strict
from edge.config.calling_devices import check_port

_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9a-fA-F:]+\]$")


class EvaluatorConfig(Strict):
    id: str = Field(pattern=_ID)
    window: int = Field(ge=1, le=9999)
    kind: Literal["tablet", "keypad"]
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    bus: str | None = None
    address: int | None = Field(default=None, ge=1, le=254)

    @model_validator(mode="after")
    def _kind(self) -> EvaluatorConfig:
        if self.kind == "tablet" and (self.token_sha256 is None or self.bus or self.address):
            raise ValueError("a tablet evaluator needs token_sha256 and no bus/address")
        if self.kind == "keypad" and (self.bus is None or self.address is None
                                      or self.token_sha256):
            raise ValueError("a 4-key evaluator needs bus and address and no token")
        return self


class AttendanceTerminalConfig(Strict):
    id: str = Field(pattern=_ID)
    host: str
    port: int = Field(default=4370, ge=1, le=65535)
    # The terminal's communication password (通讯密码). Only 0 (none) is supported so far.
    comm_key: int = Field(default=0, ge=0, le=0)
    encoding: Literal["gbk", "gb18030", "utf-8"] = "gbk"
    timeout_ms: int = Field(default=3000, ge=200, le=60_000)
    users: dict[str, str] = Field(default_factory=dict,
                                  description="terminal user id -> staff id")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _HOST.match(v):
            raise ValueError(f"not a host name or address: {v!r}")
        return v


class FingerprintSensorConfig(Strict):
    id: str = Field(pattern=_ID)
    port: str = Field(description="/dev/serial/by-id/... of the USB-UART adapter")
    window: int | None = Field(default=None, ge=1, le=9999)
    baudrate: int = Field(default=57600, ge=9600, le=115200)
    address: int = Field(default=0xFFFFFFFF, ge=0, le=0xFFFFFFFF)
    capacity: int = Field(default=300, ge=1, le=3000, description="template pages")
    reply_timeout_ms: int = Field(default=2000, ge=100, le=30_000)
    finger_wait_ms: int = Field(default=10_000, ge=500, le=120_000)

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        v = check_port(v)
        if v.startswith("tcp://"):
            raise ValueError("a fingerprint sensor is a serial device path")
        return v


def cross_check_staff(evaluators: list[EvaluatorConfig],
                      attendance: list[AttendanceTerminalConfig],
                      fingerprints: list[FingerprintSensorConfig], *, windows: set[int],
                      buses: set[str], bus_users: dict[tuple[str, int], str],
                      busy_buses: set[str], taken_ids: set[str],
                      staff: set[str] | None = None) -> list[tuple[str, str]]:
    """References of the supervision devices' tables: (key path, message) pairs."""
    out: list[tuple[str, str]] = []
    ids = set(taken_ids)
    for table, items in (("evaluators", evaluators), ("attendance", attendance),
                         ("fingerprints", fingerprints)):
        for i, d in enumerate(items):
            if d.id in ids:
                out.append((f"devices.{table}[{i}].id", f"device id {d.id!r} is already used"))
            ids.add(d.id)
            w = getattr(d, "window", None)
            if w is not None and w not in windows:
                out.append((f"devices.{table}[{i}].window", f"unknown window {w}"))
    per_window: set[int] = set()
    for i, e in enumerate(evaluators):
        if e.window in per_window:
            out.append((f"devices.evaluators[{i}].window",
                        f"window {e.window} already has an evaluator"))
        per_window.add(e.window)
        if e.kind == "keypad" and e.bus is not None and e.address is not None:
            if e.bus not in buses:
                out.append((f"devices.evaluators[{i}].bus", f"unknown bus {e.bus!r}"))
            elif e.bus in busy_buses:
                out.append((f"devices.evaluators[{i}].bus",
                            f"bus {e.bus!r} carries boards or keypads; evaluators need a bus "
                            "of their own"))
            key = (e.bus, e.address)
            if key in bus_users:
                out.append((f"devices.evaluators[{i}].address",
                            f"address {e.address} on bus {e.bus!r} is already "
                            f"{bus_users[key]!r}"))
            bus_users[key] = e.id
    tokens = [e.token_sha256 for e in evaluators if e.token_sha256]
    if len(tokens) != len(set(tokens)):
        out.append(("devices.evaluators", "two tablets share a device token"))
    for i, a in enumerate(attendance):
        for user_id, staff_id in a.users.items():
            if staff is not None and staff_id not in staff:
                out.append((f"devices.attendance[{i}].users.{user_id}",
                            f"unknown staff {staff_id!r}"))
    ports = [f.port for f in fingerprints]
    for i, p in enumerate(ports):
        if ports.index(p) != i:
            out.append((f"devices.fingerprints[{i}].port", f"port {p} is used twice"))
    return out
