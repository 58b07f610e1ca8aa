"""[[services]]: what the hall offers and how each service's tickets are numbered."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge.config.base import Strict, parse_span


class ServiceConfig(Strict):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,15}$")
    name: str = Field(min_length=1, max_length=32)
    prefix: str = Field(pattern=r"^[A-Z]$", description="ticket letter: A001 ...")
    daily_cap: int = Field(default=999, ge=1, le=999)
    avg_service_minutes: float = Field(default=8, gt=0, le=240)
    hours: list[str] | None = Field(default=None, description="overrides [hall].hours")

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[str] | None) -> list[str] | None:
        for span in v or []:
            parse_span(span)
        return v
