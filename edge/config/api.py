"""[api]: where the box listens, who may call it, and how much of it the LAN may hold."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import Strict

Role = Literal["kiosk", "manager", "central"]


class ApiToken(Strict):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    # Only the SHA-256 of the token is kept, so a leaked config does not leak the token.
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class StreamLimits(Strict):
    """[api.streams]: the live SSE streams (board, journal)."""
    # Concurrent stream clients over all streams; one more gets 503 problem+json.
    max_clients: int = Field(default=1000, ge=1, le=100_000)
    # Frames a client may be behind before it is disconnected (it reconnects, and the
    # journal stream resumes from Last-Event-ID).
    client_queue: int = Field(default=64, ge=1, le=10_000)
    keepalive_s: float = Field(default=15, gt=0, le=300)
    # Clients are written to at most this often: a burst of events is one write per client.
    flush_ms: float = Field(default=200, ge=0, le=2000)


class LoginLimits(Strict):
    """[api.logins]: PIN logins."""
    # Wrong PINs in a row for one staff id before it is locked (known ids and unknown alike).
    max_failures: int = Field(default=5, ge=1, le=100)
    lock_minutes: float = Field(default=15, gt=0, le=24 * 60)
    # Login attempts per client address per minute, right or wrong.
    per_address_per_minute: int = Field(default=20, ge=1, le=10_000)


class TicketLimits(Strict):
    """[api.tickets]: tickets taken without a kiosk token (a paired kiosk is never limited)."""
    anonymous_per_address: int = Field(default=6, ge=1, le=10_000)
    per_minutes: float = Field(default=10, gt=0, le=24 * 60)


class RequestLimits(Strict):
    """[api.limits]: what one request or connection may hold."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    ws_max_bytes: int = Field(default=16 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Open connections the server serves at once (uvicorn's plain-text 503 beyond); keep
    # below the file limit.
    max_connections: int = Field(default=2000, ge=10, le=1_000_000)
    # HTTP requests in flight at once, the live streams included (503 problem+json beyond).
    # Below max_connections, so a refusal says what and why before uvicorn's hard cap.
    max_requests: int = Field(default=1500, ge=2, le=1_000_000)
    # Failed evaluator token guesses per client address and per window, over connections.
    evaluator_failures: int = Field(default=10, ge=1, le=10_000)
    evaluator_per_minutes: float = Field(default=10, gt=0, le=24 * 60)

    @model_validator(mode="after")
    def _requests_below_connections(self) -> RequestLimits:
        if self.max_requests >= self.max_connections:
            raise ValueError(f"max_requests ({self.max_requests}) must be below "
                             f"max_connections ({self.max_connections})")
        return self


class ApiSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    session_hours: float = Field(default=12, gt=0, le=24)
    tokens: list[ApiToken] = Field(default_factory=list)
    streams: StreamLimits = Field(default_factory=StreamLimits)
    logins: LoginLimits = Field(default_factory=LoginLimits)
    tickets: TicketLimits = Field(default_factory=TicketLimits)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    # Host header values the API answers (DNS rebinding); None: the box's own names and
    # addresses, localhost and 127.0.0.1 / ::1. Without a port; "*" allows any.
    allowed_hosts: list[str] | None = None
