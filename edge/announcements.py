"""What the core needs to let a web board play the box's own call announcements.

The voice plugin (drivers.voice) provides it; the API never imports a driver. Without one (no
devices on this box) the board simply plays nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Announcer(Protocol):
    async def wav(self, number: str, window: int) -> Path:
        """The spoken call ("请 A023 号到 5 号窗口办理") as a WAV file; RuntimeError if the box
        has no speech synthesiser."""
        ...
