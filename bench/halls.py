"""Generated halls for the benchmarks: the example hall scaled to N windows.

`big_hall(250)` keeps the example's hall, API tokens, services, rating and printer, and
generates the rest the way a large hall is wired: one window board per window plus the main
board, boards split over several RS-485 lines (`BOARDS_PER_LINE` each, addresses 1..),
keypads likewise on their own lines, one staff member per window plus a second shift (the
largest hall in the domain notes has 222 windows and 450 staff), tablet evaluators at every
window and voice zones of `WINDOWS_PER_ZONE` windows. Every generated staff member has the PIN
`PIN`, hashed with the hall's argon2 memory cost (64 MiB, what a verification allocates) but one
pass and one lane, so logging 250 windows in takes seconds, not minutes. Every window serves
two of the example's services so calls spread over all of them. The attendance terminal and
fingerprint sensors are left out: per-entrance devices whose count does not grow with windows.
"""

from __future__ import annotations

import hashlib
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.config import HallConfig, parse_config  # noqa: E402

EXAMPLE = ROOT / "config" / "hall.example.toml"
BOARDS_PER_LINE = 50  # a 9600-baud line refreshing 50 boards is already ~1 s of frames
KEYPADS_PER_LINE = 64
WINDOWS_PER_ZONE = 25
PIN = "2468"


def example_raw() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def big_hall(windows: int, *, staff_per_window: int = 2, all_day: bool = True,
             daily_cap: int = 999, voice: bool = True) -> HallConfig:
    """The example hall with `windows` windows and their devices (see the module docstring).

    `voice=False` leaves the speakers out (the call-latency bench, as its 50-window figure).
    """
    raw = example_raw()
    # Cameras are benchmarked on their own (bench_video.py): 250 recorders would measure video.
    raw.pop("video", None)
    services = [s["code"] for s in raw["services"]]
    for s in raw["services"]:
        s["daily_cap"] = daily_cap
    if all_day:
        raw["hall"]["hours"] = ["00:00-24:00"]
        raw["hall"]["days"] = [1, 2, 3, 4, 5, 6, 7]
    from argon2 import PasswordHasher

    pin_hash = PasswordHasher(time_cost=1, memory_cost=65536, parallelism=1).hash(PIN)
    raw["windows"] = [{"number": n, "name": f"{n}号窗",
                       "services": [services[n % len(services)],
                                    services[(n + 1) % len(services)]]}
                      for n in range(1, windows + 1)]
    raw["staff"] = [{"id": f"S{n:03d}", "name": f"员工{n}", "department": "区政务服务中心",
                     "pin_hash": pin_hash} for n in range(1, windows * staff_per_window + 1)]
    dev = raw["devices"]
    board_lines = [f"rs485-boards-{i + 1}" for i in range(-(-windows // BOARDS_PER_LINE))]
    pad_lines = [f"rs485-keypads-{i + 1}" for i in range(-(-windows // KEYPADS_PER_LINE))]
    dev["buses"] = [{"id": b, "port": f"/dev/serial/by-id/usb-FTDI_USB-RS485_{b}-if00-port0"}
                    for b in board_lines + pad_lines]
    dev["boards"] = [{"id": "board-main", "bus": board_lines[0], "protocol": "bx5",
                      "address": 254, "main": True}]
    for n in range(1, windows + 1):
        line, addr = divmod(n - 1, BOARDS_PER_LINE)
        dev["boards"].append({"id": f"board-w{n}", "bus": board_lines[line],
                              "protocol": "bx5" if n % 2 else "at", "address": addr + 1,
                              "window": n})
    dev["keypads"] = []
    for n in range(1, windows + 1):
        line, addr = divmod(n - 1, KEYPADS_PER_LINE)
        dev["keypads"].append({"id": f"keypad-w{n}", "bus": pad_lines[line],
                               "address": addr + 1, "window": n})
    dev["voice"]["zones"] = [
        {"id": f"zone-{z + 1}",
         "windows": list(range(z * WINDOWS_PER_ZONE + 1,
                               min(windows, (z + 1) * WINDOWS_PER_ZONE) + 1))}
        for z in range(-(-windows // WINDOWS_PER_ZONE))]
    if not voice:
        del dev["voice"]
    dev["evaluators"] = [{"id": f"eval-w{n}", "window": n, "kind": "tablet",
                          "token_sha256": hashlib.sha256(f"eval-{n}".encode()).hexdigest()}
                         for n in range(1, windows + 1)]
    dev["attendance"] = []
    dev["fingerprints"] = []
    return parse_config(raw, f"generated hall of {windows} windows")


def staff_for(cfg: HallConfig) -> list[tuple[str, int]]:
    """(staff id, window): the first shift, staff S00n at window n."""
    ids = sorted(s.id for s in cfg.staff)
    return [(ids[w.number - 1], w.number) for w in sorted(cfg.windows, key=lambda w: w.number)]


def write_toml(cfg: HallConfig, path: Path) -> Path:
    """The config as TOML, for a `hallbox run` subprocess."""
    import json

    import tomli_w

    path.write_text(tomli_w.dumps(json.loads(cfg.model_dump_json(exclude_none=True))),
                    encoding="utf-8")
    return path
