"""[hall]: who this box is and when the hall is open."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from edge.config.base import Spans, Strict, Weekdays

_TOPIC_SAFE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class HallSection(Strict):
    site: str = Field(pattern=_TOPIC_SAFE, description="hall id; an MQTT topic segment")
    box: str = Field(pattern=_TOPIC_SAFE, description="box id within the hall")
    name: str = Field(min_length=1, max_length=64)
    timezone: str = "Asia/Shanghai"
    hours: Spans = Field(default_factory=lambda: ["08:30-12:00", "13:30-17:30"], min_length=1)
    days: Weekdays = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v


