"""Device health: one registry for every device class (printers, boards, link, cameras ...).

A change of health is an event on the one event path (`device.health`) and a retained state the
MQTT link republishes on `health/{device}`. Repeats of the same state are not events, so a
flapping retry loop does not flood the journal.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from edge.domain.model import DomainEvent

if TYPE_CHECKING:
    from edge.runtime import HallRuntime

log = logging.getLogger(__name__)

Grade = Literal["A", "B", "C"]  # A: the hall cannot serve; B: part limited; C: minor


@dataclass(frozen=True)
class DeviceHealth:
    device: str  # the id in the config, e.g. "printer-kiosk-1"
    device_class: str  # printer | board | voice | keypad | evaluator | attendance | link | camera
    online: bool
    grade: Grade | None = None  # None when healthy
    detail: str = ""
    metrics: dict[str, int] | None = None  # integers only: events carry no floats


class HealthRegistry:
    def __init__(self, runtime: HallRuntime) -> None:
        self._rt = runtime
        self.current: dict[str, DeviceHealth] = {}

    def report(self, health: DeviceHealth) -> bool:
        """Record a health state; journal it when it differs from the last one (not metrics)."""
        old = self.current.get(health.device)
        self.current[health.device] = health
        if old is not None and (old.online, old.grade, old.detail) == (
                health.online, health.grade, health.detail):
            return False
        if old is None or old.online != health.online or old.grade != health.grade:
            if health.grade is None and health.online:
                if old is not None:
                    log.info("%s recovered", health.device)
            else:
                log.warning("%s %s (grade %s): %s", health.device,
                            "offline" if not health.online else "degraded", health.grade,
                            health.detail)
        # Queued, not waited for: a device's I/O never waits on the disk.
        self._rt.post([DomainEvent("device.health", self.as_data(health))])
        return True

    @staticmethod
    def as_data(h: DeviceHealth) -> dict[str, Any]:
        d = asdict(h)
        d["class"] = d.pop("device_class")
        if d["metrics"] is None:
            d.pop("metrics")
        return d

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.as_data(h) for _, h in sorted(self.current.items())]
