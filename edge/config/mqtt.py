"""[mqtt]: the link to the central supervision room (absent section and no HALLBOX_MQTT_URL: off).

`HALLBOX_MQTT_URL` (mqtt://user:pass@host:port or mqtts://...) overrides `url` and the
credentials in it, so one image can be pointed at a broker without editing the file.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator

from edge.config.base import Strict


class BrokerAddress(Strict):
    tls: bool
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> BrokerAddress:
    """mqtt://user:pass@host:port or mqtts://... -> a BrokerAddress; ValueError on anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker url must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"broker url {url!r} has no host")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"broker url {url!r}: {e}") from None
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        tls=tls, host=parts.hostname, port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None)


class MqttSection(Strict):
    url: str = Field(description="mqtt://host:port or mqtts://host:port (user:pass@ allowed)")
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                                  description="default: {site}-{box}")
    username: str | None = None
    password: str | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"  # auto: MQTT 5, fall back to 3.1.1
    ca_file: str | None = None
    cert_file: str | None = None  # the box's client certificate (one per box)
    key_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(default=7 * 86400, ge=0, le=0xFFFFFFFF)
    reconnect_min_s: float = Field(default=1.0, gt=0, le=60)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    # Sender pacing: at most `inflight` unacknowledged events; a backlog leaves at `rate`/s
    # in batches of `batch`, so hundreds of halls reconnecting at once don't flood the centre.
    inflight: int = Field(default=100, ge=1, le=1000)
    batch: int = Field(default=200, ge=1, le=10000)
    rate_per_s: int = Field(default=500, ge=1, le=1_000_000)
    status_interval_s: float = Field(default=60.0, gt=0, le=3600)
    outbox_quota_mb: int = Field(default=512, ge=1)
    quota_alarm_percent: int = Field(default=80, ge=1, le=100)
    # Commands: HMAC-SHA256 key shared with the central room for this box only.
    command_key: str | None = Field(default=None, min_length=16)
    command_max_age_s: int = Field(default=300, ge=1, le=86400)
    command_skew_s: int = Field(default=30, ge=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parse_mqtt_url(v)
        return v

    @model_validator(mode="after")
    def _pairs(self) -> MqttSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s is below reconnect_min_s")
        return self

    def broker(self) -> BrokerAddress:
        """The broker address, credentials from the url unless given separately."""
        a = parse_mqtt_url(self.url)
        return a.model_copy(update={"username": self.username or a.username,
                                    "password": self.password or a.password})


def apply_env_override(raw_mqtt: dict[str, object] | None) -> dict[str, object] | None:
    """HALLBOX_MQTT_URL wins over [mqtt].url; it alone turns the link on."""
    url = os.environ.get("HALLBOX_MQTT_URL")
    if not url:
        return raw_mqtt
    out = dict(raw_mqtt or {})
    out["url"] = url
    # Credentials in the override url replace those of the file.
    if urlsplit(url).username:
        out.pop("username", None)
        out.pop("password", None)
    return out
