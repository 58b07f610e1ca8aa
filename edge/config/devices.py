"""[devices]: every device table. Each sub-table is optional; absent means no such devices.

The calling devices (printers, RS-485 lines, LED boards, keypads, voice) are described in
edge/config/calling_devices.py; the supervision devices (evaluators, attendance terminals,
fingerprint sensors) in edge/config/supervision_devices.py.
"""

from __future__ import annotations

from pydantic import Field

from edge.config.base import Strict
from edge.config.calling_devices import (
    BoardConfig,
    BusConfig,
    KeypadConfig,
    PrinterConfig,
    VoiceConfig,
    VoiceZone,
)
from edge.config.supervision_devices import (
    AttendanceTerminalConfig,
    EvaluatorConfig,
    FingerprintSensorConfig,
)

__all__ = [
    "BoardConfig", "BusConfig", "DevicesSection", "KeypadConfig", "PrinterConfig",
    "VoiceConfig", "VoiceZone",
]


class DevicesSection(Strict):
    printers: list[PrinterConfig] = Field(default_factory=list)
    buses: list[BusConfig] = Field(default_factory=list)
    boards: list[BoardConfig] = Field(default_factory=list)
    keypads: list[KeypadConfig] = Field(default_factory=list)
    voice: VoiceConfig | None = None
    # The supervision devices, see edge/config/supervision_devices.py.
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    attendance: list[AttendanceTerminalConfig] = Field(default_factory=list)
    fingerprints: list[FingerprintSensorConfig] = Field(default_factory=list)


def cross_check(dev: DevicesSection, windows: set[int]) -> list[tuple[str, str]]:
    """References between device tables and the hall: (key path, message) pairs."""
    out: list[tuple[str, str]] = []
    ids: dict[str, str] = {}
    for table in ("printers", "buses", "boards", "keypads"):
        for i, d in enumerate(getattr(dev, table)):
            if d.id in ids:
                out.append((f"devices.{table}[{i}].id",
                            f"device id {d.id!r} is already used in devices.{ids[d.id]}"))
            ids.setdefault(d.id, table)
    buses = {b.id for b in dev.buses}
    used: dict[tuple[str, int], str] = {}
    for table in ("boards", "keypads"):
        for i, d in enumerate(getattr(dev, table)):
            if d.bus not in buses:
                out.append((f"devices.{table}[{i}].bus", f"unknown bus {d.bus!r}"))
            key = (d.bus, d.address)
            if key in used:
                out.append((f"devices.{table}[{i}].address",
                            f"address {d.address} on bus {d.bus!r} is already {used[key]!r}"))
            used.setdefault(key, d.id)
            w = getattr(d, "window", None)
            if w is not None and w not in windows:
                out.append((f"devices.{table}[{i}].window", f"unknown window {w}"))
    seen: set[int] = set()
    for i, k in enumerate(dev.keypads):
        if k.window in seen:
            out.append((f"devices.keypads[{i}].window",
                        f"window {k.window} already has a keypad"))
        seen.add(k.window)
    if dev.voice:
        zoned: set[int] = set()
        for i, z in enumerate(dev.voice.zones):
            for j, w in enumerate(z.windows):
                if w not in windows:
                    out.append((f"devices.voice.zones[{i}].windows[{j}]", f"unknown window {w}"))
                if w in zoned:
                    out.append((f"devices.voice.zones[{i}].windows[{j}]",
                                f"window {w} is already in another zone"))
                zoned.add(w)
    printers_per_kiosk = [p.kiosk for p in dev.printers]
    for i, k in enumerate(printers_per_kiosk):
        if printers_per_kiosk.index(k) != i:
            out.append((f"devices.printers[{i}].kiosk",
                        "another printer already serves this kiosk"
                        if k else "only one default printer (kiosk unset) is allowed"))
    return out
