"""[api]: where the box listens and who may call it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.config.base import Strict

Role = Literal["kiosk", "manager", "central"]


class ApiToken(Strict):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    # Only the SHA-256 of the token is kept, so a leaked config does not leak the token.
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ApiSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    session_hours: float = Field(default=12, gt=0, le=24)
    tokens: list[ApiToken] = Field(default_factory=list)
