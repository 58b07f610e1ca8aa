"""The box's video: one recorder per camera, retention, clips of tickets, snapshots.

Built by the camera plugin (drivers/video.py, entry point `hallbox.devices: video`), which
hands it the cameras (drivers/camera.py: ONVIF or plain RTSP) and puts it in
`HallServices.video`, where the API router, the `video.export` command and the rating service
(a bad rating's snapshot) find it. `VideoComponent` starts the recorders and the retention.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from edge.config.cameras import CameraConfig, VideoSection
from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.health import DeviceHealth, Grade
from edge.recorder import clips as C
from edge.recorder.retention import Retention
from edge.recorder.segments import secure_dir
from edge.recorder.worker import CameraRecorder

if TYPE_CHECKING:
    from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
CLIPS_DIR = "_clips"  # camera ids start with a letter or digit: no clash
SNAPSHOTS_DIR = "_snapshots"
MAX_EXPORTS = 3  # clips cut at once (each an ffmpeg); more are refused, not queued


class CameraSource(Protocol):
    """A camera as the recorder needs it (drivers.camera.Camera)."""

    cfg: CameraConfig
    info: Any

    @property
    def id(self) -> str: ...

    async def resolve(self) -> Any: ...

    def stream_url(self) -> str: ...

    async def snapshot(self, timeout: float = 10.0) -> bytes: ...


class CameraHealth:
    """A camera's health through the runtime's registry (class camera; offline is grade B)."""

    def __init__(self, rt: HallRuntime, camera: str) -> None:
        self.rt, self.camera = rt, camera

    def ok(self, detail: str, metrics: dict[str, int] | None = None) -> None:
        self._report(True, None, detail, metrics)

    def degraded(self, grade: Grade, detail: str, metrics: dict[str, int] | None = None) -> None:
        self._report(True, grade, detail, metrics)

    def offline(self, detail: str, metrics: dict[str, int] | None = None) -> None:
        # B: part of the hall is limited (a window's service goes unrecorded).
        self._report(False, "B", detail, metrics)

    def update_metrics(self, metrics: dict[str, int]) -> None:
        cur = self.rt.health.current.get(self.camera)
        if cur is not None:
            self._report(cur.online, cur.grade, cur.detail, metrics)

    def _report(self, online: bool, grade: Grade | None, detail: str,
                metrics: dict[str, int] | None) -> None:
        try:
            self.rt.health.report(DeviceHealth(self.camera, "camera", online, grade, detail,
                                               metrics))
        except Exception:
            log.exception("%s: health report failed", self.camera)


@dataclass(frozen=True)
class IssuedClip:
    clip: C.Clip
    url: str  # path and query, signed
    expires_at: float


class VideoService:
    def __init__(self, rt: HallRuntime, cfg: VideoSection,
                 cameras: list[CameraSource]) -> None:
        self.rt = rt
        self.cfg = cfg
        folder = Path(cfg.folder)
        self.folder = secure_dir(folder if folder.is_absolute() else rt.data_dir / folder)
        self.folder = self.folder.resolve()
        self.store = rt.store
        self.tz = ZoneInfo(rt.config.hall.timezone)
        self.secret = C.load_secret(rt.data_dir / "video.secret")
        self.cameras = {c.id: c for c in cameras}
        self.recorders: dict[str, CameraRecorder] = {
            cid: CameraRecorder(self, cam) for cid, cam in self.cameras.items()}
        self.retention = Retention(self)
        self._health: dict[str, CameraHealth] = {}
        self._accessed: dict[tuple[str, str], float] = {}
        self._exporting = 0

    # ---- helpers for the workers ---------------------------------------------------------
    def iso(self, ts: float) -> str:
        return rfc3339(datetime.fromtimestamp(ts, self.tz))

    def emit(self, type_: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return self.rt.emit([DomainEvent(type_, data)])
        except Exception:
            log.exception("could not journal %s", type_)
            return []

    def post(self, type_: str, data: dict[str, Any]) -> None:
        """An event the loop need not wait for (a camera going off or on line): durable soon."""
        try:
            self.rt.post([DomainEvent(type_, data)])
        except Exception:
            log.exception("could not journal %s", type_)

    def health(self, camera: str) -> CameraHealth:
        h = self._health.get(camera)
        if h is None:
            h = self._health[camera] = CameraHealth(self.rt, camera)
        return h

    def camera_of_window(self, window: int) -> CameraSource | None:
        return next((c for c in self.cameras.values() if c.cfg.window == window), None)

    # ---- clips -----------------------------------------------------------------------------
    def ticket_range(self, ticket: str, padding: float | None = None) -> tuple[str, float, float]:
        """(camera, start, end) of a ticket's service: its call to its finish, padded."""
        t = self.rt.hall.tickets.get(ticket)
        if t is None:
            t = self.store.video_ticket(ticket)  # an earlier day's ticket
            if t is None:
                raise C.ClipRefused(404, "unknown-ticket", f"no ticket {ticket!r}",
                                    "/path/ticket")
        window, called, finished = t.window, t.called_at, t.finished_at
        if called is None or window is None:
            raise C.ClipRefused(409, "never-called",
                                f"ticket {ticket} was never called to a window", "/path/ticket")
        cam = self.camera_of_window(int(window))
        if cam is None:
            raise C.ClipRefused(404, "no-camera", f"window {window} has no camera",
                                "/path/ticket")
        pad = self.cfg.clip_padding_seconds if padding is None else padding
        start = called.timestamp() - pad
        end = (finished.timestamp() if finished else time.time()) + pad
        return cam.id, start, end

    async def export(self, camera: str, start: float, end: float, *, ticket: str | None = None,
                     partial: bool = False, who: str = "") -> IssuedClip:
        if camera not in self.cameras:
            raise C.ClipRefused(404, "unknown-camera", f"no camera {camera!r}", "/path/camera")
        if end <= start:
            raise C.ClipRefused(422, "bad-range", "to must be after from", "/body/to")
        if end - start > self.cfg.clip_max_minutes * 60:
            raise C.ClipRefused(422, "range-too-long",
                                f"{(end - start) / 60:.1f} min asked; at most "
                                f"{self.cfg.clip_max_minutes} min per clip", "/body/to")
        now = time.time()
        if start > now:
            raise C.ClipRefused(422, "in-the-future", "the range starts in the future",
                                "/body/from")
        await self._wait_recorded(camera, end)
        segs = self.store.video_segments_between(camera, start, end)
        holes = C.uncovered(segs, start, end)
        if not segs:
            raise C.ClipRefused(404, "no-recording",
                                f"no recording of {camera} from {self.iso(start)} to "
                                f"{self.iso(end)}")
        if holes and not partial:
            parts = ", ".join(f"{self.iso(a)} to {self.iso(b)}" for a, b in holes)
            raise C.ClipRefused(404, "no-recording",
                                f"no recording of {camera} for {parts}; ask with "
                                "\"partial\": true for the recorded parts")
        if self._exporting >= MAX_EXPORTS:
            raise C.ClipRefused(429, "busy", f"{self._exporting} clips are being cut; try again "
                                "in a moment")
        self._exporting += 1
        try:
            clip = await C.cut(self.folder, self.folder / CLIPS_DIR, camera, segs, start, end)
        finally:
            self._exporting -= 1
        clip = C.Clip(clip.id, clip.camera, clip.start, clip.end, clip.path, clip.bytes, holes)
        expires = int(time.time()) + self.cfg.url_ttl_seconds
        self.store.video_add_clip(clip.id, camera, clip.start, clip.end,
                                  clip.path.relative_to(self.folder).as_posix(), clip.bytes,
                                  ticket, time.time(), expires)
        sig = C.sign(self.secret, clip.id, expires)
        url = f"/api/v1/video/clips/{clip.id}?exp={expires}&sig={sig}"
        self.emit("video.exported", {
            "clip": clip.id, "camera": camera, "ticket": ticket, "by": who[:64],
            "start": self.iso(clip.start), "end": self.iso(clip.end), "bytes": clip.bytes,
            "expires_at": self.iso(expires)})
        return IssuedClip(clip, url, expires)

    async def _wait_recorded(self, camera: str, until: float) -> None:
        """A range that ends in the segment being written (or just ahead, the padding after a
        ticket's finish): wait for it to close."""
        rec = self.recorders.get(camera)
        ahead = until - time.time()
        if rec is None or not rec.recording or ahead > self.cfg.clip_padding_seconds + 1:
            return
        limit = time.monotonic() + max(ahead, 0) + 2 * self.cfg.segment_seconds + 3
        while time.monotonic() < limit and rec.recording and (rec.last_end or 0) < until:
            await asyncio.sleep(0.1)

    def answer(self, issued: IssuedClip, base_url: str = "") -> dict[str, Any]:
        c = issued.clip
        out: dict[str, Any] = {
            "url": base_url + issued.url, "camera": c.camera, "start": self.iso(c.start),
            "end": self.iso(c.end), "expires_at": self.iso(issued.expires_at),
            "bytes": c.bytes}
        if c.missing:
            out["missing"] = [{"from": self.iso(a), "to": self.iso(b)} for a, b in c.missing]
        return out

    def open_clip(self, clip_id: str, exp: str, sig: str, client: str) -> Path:
        """The clip's file for a signed GET; every access is a `video.accessed` event, every
        forged, expired or escaping url a `video.refused` one (at most one a minute per client:
        the url is reachable without a token, so the journal must not be floodable)."""
        try:
            C.check(self.secret, clip_id, exp, sig)
        except C.ClipRefused as e:
            self._refused(e, clip_id, client)
            raise
        row = self.store.video_clip(clip_id)
        if row is None:
            raise C.ClipRefused(404, "unknown-clip", "no such clip (it may have expired)")
        path = (self.folder / row["path"]).resolve()
        if not path.is_relative_to(self.folder):
            raise C.ClipRefused(400, "bad-path", "the clip's path leaves the recording folder")
        if not path.exists():
            raise C.ClipRefused(404, "unknown-clip", "the clip's file is gone")
        # A browser scrubbing sends many range requests: one event per client per clip a minute.
        now = time.monotonic()
        key = (clip_id, client)
        if now - self._accessed.get(key, -1e9) > 60:
            if len(self._accessed) > 10_000:  # bounded: forget the quiet ones
                self._accessed = {k: t for k, t in self._accessed.items() if now - t <= 60}
            self._accessed[key] = now
            self.emit("video.accessed", {"clip": clip_id, "camera": row["camera"],
                                         "ticket": row["ticket"], "client": client[:64],
                                         "start": self.iso(row["start"]),
                                         "end": self.iso(row["end"])})
        return path

    def _refused(self, e: C.ClipRefused, clip_id: str, client: str) -> None:
        now = time.monotonic()
        key = ("refused", client)
        if now - self._accessed.get(key, -1e9) <= 60:
            return
        self._accessed[key] = now
        self.emit("video.refused", {"reason": e.code, "client": client[:64],
                                    "clip": clip_id[:64], "detail": e.detail[:200]})

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot_ref(self, window: int, ticket: str | None) -> str | None:
        """The reference a bad rating carries; the snapshot itself is taken just after."""
        cam = self.camera_of_window(window)
        if cam is None:
            return None
        stamp = datetime.now(self.tz).strftime("%Y%m%dT%H%M%S")
        return f"{SNAPSHOTS_DIR}/{cam.id}/{stamp}-{ticket or 'window'}.jpg"

    async def take_snapshot(self, window: int, ref: str) -> Path | None:
        cam = self.camera_of_window(window)
        if cam is None:
            return None
        path = (self.folder / ref).resolve()
        if not path.is_relative_to(self.folder):
            return None
        try:
            jpeg = await cam.snapshot()
        except Exception as e:
            log.warning("%s: snapshot for %s failed: %s", cam.id, ref, e)
            return None
        secure_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(jpeg)
        return path


class VideoComponent:
    """Starts the recorders and the retention worker (after the simulators, if any)."""

    def __init__(self, svc: VideoService) -> None:
        self.svc = svc
        self.name = "video"

    async def start(self) -> None:
        for r in self.svc.recorders.values():
            await r.start()
        await self.svc.retention.start()

    async def stop(self) -> None:
        await self.svc.retention.stop()
        await asyncio.gather(*(r.stop() for r in self.svc.recorders.values()),
                             return_exceptions=True)
