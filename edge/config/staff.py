"""[[staff]]: window staff, with PINs stored only as argon2 hashes."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge.config.base import Strict


class StaffConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    name: str = Field(min_length=1, max_length=32)
    department: str = Field(min_length=1, max_length=64)
    photo: str | None = None
    pin_hash: str
    windows: list[int] | None = Field(default=None, description="windows allowed; all if unset")

    @field_validator("pin_hash")
    @classmethod
    def _argon2(cls, v: str) -> str:
        if not v.startswith("$argon2"):
            raise ValueError("pin_hash must be an argon2 hash (hallbox hash-pin makes one)")
        return v
