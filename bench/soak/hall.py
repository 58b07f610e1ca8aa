"""The soak's hall: the example hall at `windows` windows, every device pointed at the soak's
simulators (pty symlinks under {run}/dev, the attendance terminal and the cameras on loopback)
and the link pointed at the soak's own broker.

One LED board and one caller keypad per window (boards and keypads each on one RS-485 line),
a 4-key evaluator per window on a third line, one ticket printer, one attendance terminal with
every staff member enrolled, two fingerprint sensors and `cameras` recorded window cameras.
Staff S001..S{windows} serve window n; as many again exist (the hostile traffic guesses their
PINs, so a lock never stops a working window). Every PIN is `PIN`, hashed cheaply.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import HallConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "hall.example.toml"
PIN = "2468"
SITE, BOX = "soak", "box-01"
COMMAND_KEY = "soak-command-key-0123456789abcdef"
EVAL_BASE = 100  # the 4-key evaluator of window n answers at address EVAL_BASE + n
KIOSK_TOKEN = "demo-kiosk-token"
MANAGER_TOKEN = "demo-manager-token"


@dataclass(frozen=True)
class HallPlan:
    windows: int
    cameras: int
    dev_dir: Path
    attendance_port: int
    rtsp: dict[str, str]  # camera id -> rtsp url
    mqtt_url: str
    segment_seconds: int = 2
    free_floor_gb: float = 0.2

    @property
    def staff(self) -> list[tuple[str, int]]:
        return [(f"S{n:03d}", n) for n in range(1, self.windows + 1)]

    @property
    def bystanders(self) -> list[str]:
        return [f"S{n:03d}" for n in range(self.windows + 1, 2 * self.windows + 1)]


def user_id(staff: str) -> str:
    """The attendance terminal's user id of a staff member."""
    return str(1000 + int(staff[1:]))


def build(plan: HallPlan) -> HallConfig:
    raw: dict[str, Any] = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    raw["hall"].update(site=SITE, box=BOX, hours=["00:00-24:00"], days=[1, 2, 3, 4, 5, 6, 7])
    services = [s["code"] for s in raw["services"]]
    for s in raw["services"]:
        s["daily_cap"] = 999
    from argon2 import PasswordHasher

    pin_hash = PasswordHasher(time_cost=1, memory_cost=65536, parallelism=1).hash(PIN)
    n = plan.windows
    raw["windows"] = [{"number": w, "name": f"{w}号窗",
                       "services": [services[w % len(services)],
                                    services[(w + 1) % len(services)]]}
                      for w in range(1, n + 1)]
    raw["staff"] = [{"id": f"S{i:03d}", "name": f"员工{i}", "department": "区政务服务中心",
                     "pin_hash": pin_hash} for i in range(1, 2 * n + 1)]
    raw["attendance"]["staff"] = {}
    d = plan.dev_dir
    dev = raw["devices"]
    dev.pop("voice", None)  # speakers are not on a wire the soak can fault
    raw["devices"] = {
        "printers": [{**dev["printers"][0], "port": str(d / "printer-kiosk-1")}],
        "buses": [{"id": b, "port": str(d / b), "baudrate": 9600}
                  for b in ("rs485-boards", "rs485-keypads", "rs485-eval")],
        "boards": [{"id": "board-main", "bus": "rs485-boards", "protocol": "bx5",
                    "address": 254, "main": True}] + [
            {"id": f"board-w{w}", "bus": "rs485-boards", "protocol": "bx5" if w % 2 else "at",
             "address": w, "window": w} for w in range(1, n + 1)],
        "keypads": [{"id": f"keypad-w{w}", "bus": "rs485-keypads", "address": w, "window": w}
                    for w in range(1, n + 1)],
        "evaluators": [{"id": f"eval-w{w}", "window": w, "kind": "keypad", "bus": "rs485-eval",
                        "address": EVAL_BASE + w} for w in range(1, n + 1)],
        "attendance": [{"id": "zk-entrance", "host": "127.0.0.1", "port": plan.attendance_port,
                        "encoding": "gbk",
                        "users": {user_id(s): s for s in
                                  [f"S{i:03d}" for i in range(1, 2 * n + 1)]}}],
        "fingerprints": [{"id": f"fp-w{w}", "port": str(d / f"fp-w{w}"), "window": w}
                         for w in (1, 2)],
    }
    raw["rating"]["window_seconds"] = 60
    raw["video"] = {
        "folder": "recordings", "segment_seconds": plan.segment_seconds,
        "stall_seconds": 3 * plan.segment_seconds, "retention_days": 30, "quota_gb": 50,
        "free_floor_gb": plan.free_floor_gb, "cleanup_seconds": 5, "clip_padding_seconds": 2,
        "cameras": [{"id": cam, "window": i + 1, "rtsp": url}
                    for i, (cam, url) in enumerate(sorted(plan.rtsp.items()))],
    }
    raw["mqtt"] = {"url": plan.mqtt_url, "command_key": COMMAND_KEY, "keepalive_s": 5,
                   "reconnect_min_s": 0.2, "reconnect_max_s": 2.0, "status_interval_s": 2,
                   "rate_per_s": 5000}
    return parse_config(raw, "soak hall")


def write(cfg: HallConfig, path: Path) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(json.loads(cfg.model_dump_json(exclude_none=True))),
                    encoding="utf-8")
    return path
