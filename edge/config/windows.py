"""[[windows]]: the service windows and which services each serves."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from edge.config.base import Strict


class WindowService(Strict):
    service: str
    # Weight scales how long a ticket of this service has waited when the window picks the next
    # one; equal weights give plain FIFO across the window's services.
    weight: float = Field(default=1.0, gt=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _from_code(cls, v: Any) -> Any:
        return {"service": v} if isinstance(v, str) else v


class WindowConfig(Strict):
    number: int = Field(ge=1, le=9999)
    name: str = Field(min_length=1, max_length=32)
    theme: str | None = Field(default=None, max_length=16)
    services: list[WindowService] = Field(min_length=1)
