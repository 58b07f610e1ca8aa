"""What `hallbox run` starts beside the API: device drivers, simulators, the MQTT link ...

Each feature adds a builder to BUILDERS; a builder looks at the config and returns the
components it needs (none when its section is absent). Components start after the store is
open and stop before it closes. A component that fails to start is logged and reported through
health; it never stops the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge.runtime import HallRuntime


@dataclass
class RunContext:
    runtime: HallRuntime
    data_dir: Path
    sim: bool
    # False with `hallbox run --no-devices`: the queue, API and link only, no device drivers.
    devices: bool = True
    # With --sim, simulators add {"class", "id", "endpoint"} entries; written to {data}/sim.json.
    sim_devices: list[dict[str, Any]] = field(default_factory=list)


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


Builder = Callable[[RunContext], list[Component]]

# Order matters: simulators before the drivers that open them.
BUILDERS: list[Builder] = []

# Feature builders register here (imported last: they import this module's types).
from drivers.hall import build as _hall_devices  # noqa: E402

BUILDERS.append(_hall_devices)
# Hall devices II (ratings, evaluators, attendance, fingerprint sensors).
from drivers.staff_devices import build as _build_staff_devices  # noqa: E402

BUILDERS.append(_build_staff_devices)
# The MQTT link to the central room (edge/link); absent [mqtt] section: no component.
from edge.link.component import build_link  # noqa: E402

BUILDERS.append(build_link)
