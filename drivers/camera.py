"""A window camera: where its H.264 stream and snapshots are, and whether its clock agrees.

ONVIF through onvif-zeep-async (Profile S calls: GetDeviceInformation, GetProfiles,
GetStreamUri, GetSnapshotUri, GetSystemDateAndTime, SetSystemDateAndTime). A camera given as a
plain RTSP url has no ONVIF: its stream is the url, a snapshot is one frame of it (ffmpeg).

Credentials go to the camera only: they are put into the RTSP url handed to ffmpeg (which is
never logged: logs and health see `edge.recorder.segments.redacted`).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from edge.config.cameras import CameraConfig

log = logging.getLogger(__name__)
ONVIF_TIMEOUT_S = 10.0


class CameraError(Exception):
    """The camera could not be reached or does not do what we need (no H.264 profile ...)."""


@dataclass(frozen=True)
class CameraInfo:
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    serial: str = ""
    profile: str = ""  # the ONVIF media profile token used
    width: int = 0
    height: int = 0
    stream_uri: str = ""  # without credentials
    snapshot_uri: str | None = None
    drift_s: float | None = None  # camera clock minus box clock
    clock_set: bool = False


def with_credentials(url: str, user: str | None, password: str | None) -> str:
    """rtsp://host/x -> rtsp://user:pass@host/x (only when the url carries none)."""
    if not user:
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url
    cred = quote(user, safe="") + (":" + quote(password or "", safe="") if password else "")
    return urlunsplit((parts.scheme, f"{cred}@{parts.netloc}", parts.path, parts.query,
                       parts.fragment))


def _onvif_dt(d: Any) -> datetime:
    return datetime(d.Date.Year, d.Date.Month, d.Date.Day, d.Time.Hour, d.Time.Minute,
                    d.Time.Second, tzinfo=UTC)


class Camera:
    """One configured camera; `resolve` asks it (again) where its stream is."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.info: CameraInfo | None = None
        self._password = cfg.password.get_secret_value() if cfg.password else None

    @property
    def id(self) -> str:
        return self.cfg.id

    async def resolve(self) -> CameraInfo:
        if self.cfg.rtsp is not None:
            self.info = CameraInfo(stream_uri=self.cfg.rtsp)
            return self.info
        try:
            self.info = await asyncio.wait_for(self._onvif(), ONVIF_TIMEOUT_S)
        except CameraError:
            raise
        except Exception as e:
            # zeep faults, connection refused, bad XML, auth refused: one kind of failure here.
            raise CameraError(f"ONVIF {self.cfg.onvif}: {type(e).__name__}: {e}") from None
        return self.info

    def stream_url(self) -> str:
        """The url for ffmpeg, credentials included (never log it)."""
        assert self.info is not None
        return with_credentials(self.info.stream_uri, self.cfg.username, self._password)

    async def _onvif(self) -> CameraInfo:
        from onvif import ONVIFCamera

        assert self.cfg.onvif
        u = urlsplit(self.cfg.onvif)
        cam = ONVIFCamera(u.hostname or "", u.port or 80, self.cfg.username, self._password)
        try:
            await cam.update_xaddrs()
            dev = await cam.create_devicemgmt_service()
            di = await dev.GetDeviceInformation()
            drift, clock_set = await self._check_clock(dev)
            media = await cam.create_media_service()
            profiles = await media.GetProfiles()
            h264 = [p for p in profiles or [] if p.VideoEncoderConfiguration is not None
                    and str(p.VideoEncoderConfiguration.Encoding).upper() == "H264"]
            if not h264:
                raise CameraError(f"ONVIF {self.cfg.onvif}: no H.264 media profile")
            # The largest H.264 profile is the main stream (evidence wants the full picture).
            best = max(h264, key=lambda p: p.VideoEncoderConfiguration.Resolution.Width
                       * p.VideoEncoderConfiguration.Resolution.Height)
            uri = await media.GetStreamUri({
                "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                "ProfileToken": best.token})
            snap = await media.GetSnapshotUri({"ProfileToken": best.token})
            res = best.VideoEncoderConfiguration.Resolution
            return CameraInfo(di.Manufacturer or "", di.Model or "", di.FirmwareVersion or "",
                              di.SerialNumber or "", best.token, int(res.Width),
                              int(res.Height), str(uri.Uri),
                              str(snap.Uri) if snap is not None and snap.Uri else None,
                              drift, clock_set)
        finally:
            await cam.close()

    async def _check_clock(self, dev: Any) -> tuple[float, bool]:
        """Camera clock minus box clock; set the camera's clock when allowed and too far."""
        sdt = await dev.GetSystemDateAndTime()
        box = datetime.now(UTC)
        drift = (_onvif_dt(sdt.UTCDateTime) - box).total_seconds()
        if abs(drift) <= self.cfg.max_drift_seconds or not self.cfg.set_clock:
            return drift, False
        now = datetime.now(UTC)
        await dev.SetSystemDateAndTime({
            "DateTimeType": "Manual", "DaylightSavings": False,
            "UTCDateTime": {
                "Date": {"Year": now.year, "Month": now.month, "Day": now.day},
                "Time": {"Hour": now.hour, "Minute": now.minute, "Second": now.second}}})
        sdt = await dev.GetSystemDateAndTime()
        drift = (_onvif_dt(sdt.UTCDateTime) - datetime.now(UTC)).total_seconds()
        log.info("%s: camera clock set (now %+.1f s from the box)", self.id, drift)
        return drift, True

    async def snapshot(self, timeout: float = 10.0) -> bytes:
        """A JPEG: the ONVIF snapshot uri (HTTP digest auth) or one frame of the stream."""
        info = self.info or await self.resolve()
        if info.snapshot_uri:
            try:
                return await asyncio.wait_for(self._http_snapshot(info.snapshot_uri), timeout)
            except Exception as e:
                log.warning("%s: snapshot uri failed (%s); taking a frame of the stream",
                            self.id, type(e).__name__)
        return await grab_frame(self.stream_url(), timeout)

    async def _http_snapshot(self, uri: str) -> bytes:
        import aiohttp

        mw: tuple[Any, ...] = ()
        if self.cfg.username and self._password:
            mw = (aiohttp.DigestAuthMiddleware(self.cfg.username, self._password),)
        async with aiohttp.ClientSession(middlewares=mw) as s, s.get(uri) as r:
            if r.status != 200:
                raise CameraError(f"snapshot: HTTP {r.status}")
            body = await r.read()
        if not body.startswith(b"\xff\xd8"):
            raise CameraError("snapshot: not a JPEG")
        return body


async def grab_frame(url: str, timeout: float = 10.0) -> bytes:
    """One frame of a stream as JPEG (decodes from the next keyframe only)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frame.jpg"
        cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
        if url.startswith("rtsp"):
            cmd += ["-rtsp_transport", "tcp", "-timeout", "5000000"]
        cmd += ["-i", url, "-frames:v", "1", "-q:v", "4", "-y", str(out)]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CameraError("no frame from the stream in time") from None
        if proc.returncode != 0 or not out.exists():
            raise CameraError(f"no frame: {err.decode(errors='replace')[-200:]}")
        return out.read_bytes()
