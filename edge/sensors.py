"""What the core needs of a window's fingerprint sensor; drivers.fingerprint implements it.

The API and the central commands use a sensor only through this, so the core never imports a
driver.
"""

from __future__ import annotations

from typing import Any, Protocol


class SensorFailure(Exception):
    """A sensor operation that did not complete; `code` is stable, `detail` is for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class FingerprintSensor(Protocol):
    id: str
    window: int | None  # the window it sits at, or None for a hall sensor

    async def identify(self, purpose: str = "spot_check") -> dict[str, Any]: ...

    async def enrol(self, staff: str) -> int: ...
