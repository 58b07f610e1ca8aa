"""The hall config: one TOML file, validated at start, every error with its key path."""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from edge.config.alerts import AlertsSection, cross_check_alerts
from edge.config.api import ApiSection, ApiToken
from edge.config.attendance import AttendanceSection, cross_check_attendance
from edge.config.backup import BackupSection
from edge.config.base import Strict
from edge.config.cameras import VideoSection
from edge.config.cameras import cross_check as _video_cross_check
from edge.config.devices import DevicesSection
from edge.config.devices import cross_check as _devices_cross_check
from edge.config.hall import HallSection
from edge.config.mqtt import MqttSection, apply_env_override
from edge.config.queue import QueuePolicy
from edge.config.rating import RatingSection
from edge.config.services import ServiceConfig
from edge.config.staff import StaffConfig
from edge.config.supervision_devices import cross_check_staff
from edge.config.windows import WindowConfig, WindowService

__all__ = [
    "AlertsSection", "ApiSection", "ApiToken", "AttendanceSection", "ConfigError",
    "ConfigIssue", "DevicesSection", "HallConfig",
    "HallSection", "MqttSection",
    "QueuePolicy", "ServiceConfig", "StaffConfig", "WindowConfig", "WindowService",
    "load_config", "parse_config",
]


class HallConfig(Strict):
    hall: HallSection
    queue: QueuePolicy = Field(default_factory=QueuePolicy)
    services: list[ServiceConfig] = Field(min_length=1)
    windows: list[WindowConfig] = Field(min_length=1)
    staff: list[StaffConfig] = Field(default_factory=list)
    api: ApiSection = Field(default_factory=ApiSection)
    devices: DevicesSection | None = None  # absent: no devices driven by this box
    rating: RatingSection | None = None
    mqtt: MqttSection | None = None  # absent (and no HALLBOX_MQTT_URL): no link
    # Supervision: absent [attendance] takes [hall] hours; [alerts] has defaults.
    attendance: AttendanceSection | None = None
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    backup: BackupSection = Field(default_factory=BackupSection)  # daily copy
    video: VideoSection | None = None  # absent: no cameras (edge/config/cameras.py)

    def service(self, code: str) -> ServiceConfig:
        return next(s for s in self.services if s.code == code)


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(top)'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"{source}: {len(issues)} config error(s)\n" + "\n".join(
            f"  {i}" for i in issues))


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _cross_check(cfg: HallConfig) -> list[ConfigIssue]:
    """Rules that span sections: references must resolve, ids must be unique."""
    issues: list[ConfigIssue] = []

    def dupes(path: str, values: list[Any], what: str) -> None:
        for value, n in Counter(values).items():
            if n > 1:
                idx = [i for i, v in enumerate(values) if v == value][1]
                issues.append(ConfigIssue(f"{path}[{idx}]", f"duplicate {what} {value!r}"))

    dupes("services", [s.code for s in cfg.services], "service code")
    for i, s in enumerate(cfg.services):
        if [x.prefix for x in cfg.services].index(s.prefix) != i:
            issues.append(ConfigIssue(f"services[{i}].prefix",
                                      f"ticket prefix {s.prefix!r} is already used"))
    dupes("windows", [w.number for w in cfg.windows], "window number")
    dupes("staff", [s.id for s in cfg.staff], "staff id")
    dupes("api.tokens", [t.token_sha256 for t in cfg.api.tokens], "token")
    codes = {s.code for s in cfg.services}
    numbers = {w.number for w in cfg.windows}
    for i, w in enumerate(cfg.windows):
        seen: set[str] = set()
        for j, ws in enumerate(w.services):
            if ws.service not in codes:
                issues.append(ConfigIssue(f"windows[{i}].services[{j}].service",
                                          f"unknown service {ws.service!r}"))
            if ws.service in seen:
                issues.append(ConfigIssue(f"windows[{i}].services[{j}].service",
                                          f"service {ws.service!r} listed twice"))
            seen.add(ws.service)
    for i, st in enumerate(cfg.staff):
        for j, n in enumerate(st.windows or []):
            if n not in numbers:
                issues.append(ConfigIssue(f"staff[{i}].windows[{j}]", f"unknown window {n}"))
    served = {ws.service for w in cfg.windows for ws in w.services}
    for i, s in enumerate(cfg.services):
        if s.code not in served:
            issues.append(ConfigIssue(
                f"services[{i}].code",
                f"no window serves {s.code!r}; its tickets would never be called"))
    # Supervision.
    if cfg.attendance is not None:
        issues += [ConfigIssue(p, m) for p, m in cross_check_attendance(
            cfg.attendance, {s.id for s in cfg.staff})]
    issues += [ConfigIssue(p, m) for p, m in cross_check_alerts(cfg.alerts, codes)]
    if cfg.devices is not None:
        issues += [ConfigIssue(p, m) for p, m in _devices_cross_check(cfg.devices, numbers)]
        issues += [ConfigIssue(p, m) for p, m in _staff_devices_check(cfg.devices, numbers,
                                                                     {s.id for s in cfg.staff})]
    if cfg.video is not None:
        issues += [ConfigIssue(p, m) for p, m in _video_cross_check(cfg.video, numbers)]
    return issues


def _staff_devices_check(dev: DevicesSection, numbers: set[int],
                         staff: set[str]) -> list[tuple[str, str]]:
    return cross_check_staff(
        dev.evaluators, dev.attendance, dev.fingerprints, windows=numbers,
        buses={b.id for b in dev.buses},
        bus_users={(d.bus, d.address): d.id for d in [*dev.boards, *dev.keypads]},
        busy_buses={d.bus for d in [*dev.boards, *dev.keypads]},
        taken_ids={d.id for t in (dev.printers, dev.buses, dev.boards, dev.keypads) for d in t},
        staff=staff)


def parse_config(raw: dict[str, Any], source: str = "<config>") -> HallConfig:
    mqtt = apply_env_override(raw.get("mqtt"))
    if mqtt is not None:
        raw = {**raw, "mqtt": mqtt}
    try:
        cfg = HallConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(source, [
            ConfigIssue(_key_path(err["loc"]), err["msg"]) for err in e.errors()
        ]) from None
    issues = _cross_check(cfg)
    if issues:
        raise ConfigError(source, issues)
    return cfg


def load_config(path: str | Path) -> HallConfig:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), [ConfigIssue("", "file not found")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [ConfigIssue("", f"not UTF-8 text: {e}")]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(p), [ConfigIssue("", f"TOML syntax: {e}")]) from None
    return parse_config(raw, str(p))
