"""[video]: window cameras (ONVIF or plain RTSP), continuous recording, retention and clips.

Absent: no cameras, no recording. Each camera is bound to one window (or to the hall when
`window` is absent); a window has at most one camera. Credentials stay in the config: they are
never logged, and `config.get` redacts them (keys named password/secret are redacted there).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from edge.config.base import Strict

_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_URL = re.compile(r"^(rtsp|http)://[^\s]+$")


class CameraConfig(Strict):
    id: str = Field(pattern=_ID)
    window: int | None = Field(default=None, ge=1, le=9999)  # None: a camera of the hall
    # Either the camera's ONVIF device service (the stream and snapshot uris are asked for) or
    # a plain RTSP url (no ONVIF: snapshots are one frame of the stream).
    onvif: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    rtsp: str | None = Field(default=None, pattern=r"^rtsps?://[^\s]+$")
    username: str | None = Field(default=None, max_length=64)
    password: SecretStr | None = None
    # The camera's clock must agree with the box, or its recordings would not line up with the
    # queue's events: beyond this many seconds it is set (set_clock) or a health warning.
    max_drift_seconds: float = Field(default=2.0, gt=0, le=3600)
    set_clock: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> CameraConfig:
        if (self.onvif is None) == (self.rtsp is None):
            raise ValueError("give exactly one of onvif (device service url) or rtsp (stream url)")
        return self


class VideoSection(Strict):
    cameras: list[CameraConfig] = Field(default_factory=list)
    # Where segments go: relative paths are under the data directory.
    folder: str = "recordings"
    segment_seconds: int = Field(default=10, ge=1, le=600)
    # No new segment for this long (a camera that stalls makes ffmpeg hang): restart ffmpeg.
    stall_seconds: int | None = Field(default=None, ge=2, le=3600)
    retention_days: int = Field(default=30, ge=1, le=3650)
    quota_gb: float = Field(default=200.0, gt=0)
    # Keep at least this much free on the recording disk, deleting the oldest segments.
    free_floor_gb: float = Field(default=5.0, ge=0)
    cleanup_seconds: int = Field(default=60, ge=1, le=86400)
    # The clip of a ticket: from its call minus the padding to its finish plus the padding.
    clip_padding_seconds: int = Field(default=5, ge=0, le=600)
    clip_max_minutes: int = Field(default=120, ge=1, le=24 * 60)
    url_ttl_seconds: int = Field(default=3600, ge=30, le=7 * 86400)
    # Who may ask for clips (API tokens' roles); staff never see recordings.
    roles: list[Literal["manager", "central"]] = Field(default_factory=lambda: ["manager",
                                                                                "central"])
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    # How often a recording camera's clock is compared with the box's again.
    clock_check_seconds: int = Field(default=3600, ge=5, le=86400)
    # How the central room reaches this box's API, for clip urls sent over MQTT
    # (default: the [api] host and port).
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")

    @model_validator(mode="after")
    def _stall_after_segments(self) -> VideoSection:
        if self.stall_seconds is not None and self.stall_seconds < 2 * self.segment_seconds:
            # A healthy camera closes a segment every segment_seconds; less would kill it.
            raise ValueError(f"stall_seconds ({self.stall_seconds}) must be at least twice "
                             f"segment_seconds ({self.segment_seconds})")
        return self

    def stall_after(self) -> float:
        return float(self.stall_seconds or max(3 * self.segment_seconds, 6))


def cross_check(video: VideoSection, windows: set[int]) -> list[tuple[str, str]]:
    """Bindings: a known window, one camera per window, unique ids ((key path, message))."""
    out: list[tuple[str, str]] = []
    ids: set[str] = set()
    bound: dict[int, str] = {}
    for i, c in enumerate(video.cameras):
        if c.id in ids:
            out.append((f"video.cameras[{i}].id", f"camera id {c.id!r} is already used"))
        ids.add(c.id)
        if c.window is None:
            continue
        if c.window not in windows:
            out.append((f"video.cameras[{i}].window", f"unknown window {c.window}"))
        elif c.window in bound:
            out.append((f"video.cameras[{i}].window",
                        f"window {c.window} already has camera {bound[c.window]!r}"))
        bound.setdefault(c.window, c.id)
    return out
