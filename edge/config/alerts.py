"""[alerts]: thresholds of the floor alerts (yellow, then red) and of the cross-checks.

Each threshold pair raises a yellow alert at `yellow` and a red one at `red`; a yellow alert
that persists `escalate_minutes` turns red as well. Absent section: these defaults.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from edge.config.base import Strict


class Thresholds(Strict):
    yellow: int = Field(ge=1, le=100_000)
    red: int = Field(ge=1, le=100_000)

    @model_validator(mode="after")
    def _order(self) -> Thresholds:
        if self.red <= self.yellow:
            raise ValueError(f"red ({self.red}) must be above yellow ({self.yellow})")
        return self


def _t(yellow: int, red: int) -> Thresholds:
    return Thresholds(yellow=yellow, red=red)


class RefusedRatings(Strict):
    """A window whose ratings are refused unusually often: at least `min_count` refusals in a
    day that are at least `percent` % of its rating attempts (refused + accepted)."""

    min_count: int = Field(default=5, ge=1, le=10_000)
    percent: int = Field(default=30, ge=1, le=100)


class AlertsSection(Strict):
    evaluate_seconds: int = Field(default=15, ge=1, le=600)
    escalate_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # The longest wait of a service's waiting tickets, in minutes; per service overrides.
    longest_wait_minutes: Thresholds = Field(default_factory=lambda: _t(30, 60))
    service_wait_minutes: dict[str, Thresholds] = Field(default_factory=dict)
    # A window with people waiting for its services and nobody logged in, in minutes.
    unattended_minutes: Thresholds = Field(default_factory=lambda: _t(5, 15))
    # A window paused, in minutes.
    paused_minutes: Thresholds = Field(default_factory=lambda: _t(15, 30))
    # Devices: grade B is yellow, grade A red.
    device_faults: bool = True
    # 不满意 is yellow, 非常不满意 red; open until a manager acknowledges it.
    bad_ratings: bool = True
    # The MQTT outbox's unsent bytes as a percentage of its quota.
    outbox_percent: Thresholds = Field(default_factory=lambda: _t(50, 80))
    refused_ratings: RefusedRatings = Field(default_factory=RefusedRatings)


def cross_check_alerts(sec: AlertsSection, services: set[str]) -> list[tuple[str, str]]:
    return [(f"alerts.service_wait_minutes.{code}", f"unknown service {code!r}")
            for code in sec.service_wait_minutes if code not in services]
