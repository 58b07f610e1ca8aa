"""The recording supervisor of one camera: one ffmpeg, restarted whenever recording stops.

Recording stops when ffmpeg exits (the camera went away, a network error, a kill) or when no
segment closed for `stall_seconds` (a camera that freezes keeps the TCP connection open and
ffmpeg can hang on it, or exit 0 much later): then ffmpeg is killed. Either way the supervisor
indexes what the run left (repair of the open segment), reports the camera offline once per
outage (`camera.offline` and its health), and starts again with capped backoff, asking the
camera for its stream again (an ONVIF camera may have changed its url). The first segment of
the new run ends the outage: `camera.online` with the gap's time range.

Segments are indexed as ffmpeg closes them (its CSV list, polled); see segments.py for times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.recorder import segments as S
from edge.recorder.segments import redacted

if TYPE_CHECKING:
    from edge.recorder.service import CameraSource, VideoService

log = logging.getLogger(__name__)
POLL_S = 0.25
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 15.0


class CameraRecorder:
    def __init__(self, svc: VideoService, camera: CameraSource) -> None:
        self.svc = svc
        self.camera = camera
        self.cfg = camera.cfg
        self.name = f"recorder-{camera.id}"
        self.dir = svc.folder / camera.id
        self.proc: asyncio.subprocess.Process | None = None
        self.recording = False
        self.segments = 0  # indexed by this process
        self.restarts = 0
        self.stalls = 0
        self.last_end: float | None = None  # end of the newest indexed segment
        self.offline_since: float | None = None  # an outage that was reported
        self.offline_reason = ""
        self._task: asyncio.Task[None] | None = None
        self._stderr: deque[str] = deque(maxlen=20)

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        S.secure_dir(self.dir)
        await self.repair()
        last = self.svc.store.video_last_segment(self.camera.id)
        self.last_end = last[1] if last else None
        if self.last_end is not None:
            # The box was down (or this camera was): the first new segment closes that gap.
            self.offline_since = self.last_end
            self.offline_reason = "box restarted"
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._end_process(graceful=True)

    async def repair(self) -> int:
        """Index what earlier runs left on disk without an index row; drop rows whose file is
        gone (retention deleted the file, then the box died before the row)."""
        indexed = self.svc.store.video_segment_paths(self.camera.id)
        orphans = self.svc.store.video_segment_ids(
            [p for p in indexed if not (self.svc.folder / p).exists()])
        if orphans:
            self.svc.store.video_delete_segments(orphans)
            log.info("%s: dropped %d index row(s) without a file", self.camera.id, len(orphans))
        found: list[S.Segment] = []
        for run in S.runs(self.dir):
            found += await S.repair_run(self.svc.folder, self.camera.id, run, indexed)
            S.secure_files(run)
        if found:
            self.svc.store.video_add_segments(s.row() for s in found)
            log.info("%s: indexed %d segment(s) found on disk", self.camera.id, len(found))
        return len(found)

    # ---- supervision ---------------------------------------------------------------------
    async def _supervise(self) -> None:
        delay = BACKOFF_MIN_S
        while True:
            try:
                info = await self.camera.resolve()
            except Exception as e:  # unreachable, refused, no H.264 profile: not recording
                self._went_offline(str(e) or type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            self._clock_health(info.drift_s, info.clock_set)
            before = self.segments
            reason = await self._run_once()
            self.restarts += 1
            self._went_offline(reason)
            # A run that recorded something was a working camera that failed: retry soon.
            delay = BACKOFF_MIN_S if self.segments > before else min(delay * 2, BACKOFF_MAX_S)
            await asyncio.sleep(delay)

    async def _run_once(self) -> str:
        run_dir = S.secure_dir(self.dir / f"{int(time.time() * 1000):013d}")
        cmd = S.record_command(self.camera.stream_url(), run_dir, self.svc.cfg.segment_seconds,
                               self.svc.cfg.rtsp_transport)
        old_umask = os.umask(0o077)  # ffmpeg's files: 0600 from the start
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
                preexec_fn=S.die_with_parent)
        finally:
            os.umask(old_umask)
        log.info("%s: recording %s", self.camera.id, redacted(cmd[cmd.index("-i") + 1]))
        base: list[float] = []
        reader = asyncio.create_task(self._read_stderr(base, run_dir))
        tail = S.ListTail(run_dir / "list.csv")
        progress = time.monotonic()
        stall = self.svc.cfg.stall_after()
        # Fast enough to index a segment soon after it closes, rare enough to cost nothing.
        poll = max(POLL_S, min(1.0, self.svc.cfg.segment_seconds / 4))
        reason = ""
        clock_due = time.monotonic() + self.svc.cfg.clock_check_seconds
        checking: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(poll)
                if self._index_new(run_dir, base, tail):
                    progress = time.monotonic()
                if time.monotonic() >= clock_due and (checking is None or checking.done()):
                    # A camera clock drifts over weeks of recording: look again now and then.
                    checking = asyncio.create_task(self._recheck_clock())
                    clock_due = time.monotonic() + self.svc.cfg.clock_check_seconds
                if self.proc.returncode is not None:
                    reason = f"ffmpeg exited with {self.proc.returncode}: {self._last_error()}"
                    break
                if time.monotonic() - progress > stall:
                    self.stalls += 1
                    reason = f"no new segment for {stall:.0f} s (stalled)"
                    break
        finally:
            if checking is not None:
                checking.cancel()
            await self._end_process(graceful=False)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        # The segments ffmpeg closed since the last poll, and the one it had open.
        self._index_new(run_dir, base, tail)
        indexed = self.svc.store.video_segment_paths(self.camera.id)
        rest = await S.repair_run(self.svc.folder, self.camera.id, run_dir, indexed)
        if rest:
            self.svc.store.video_add_segments(s.row() for s in rest)
            self.segments += len(rest)
            self.last_end = max(self.last_end or 0, *(s.end for s in rest))
        S.secure_files(run_dir)
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty: a run that never got a frame
        return reason

    async def _read_stderr(self, base: list[float], run_dir: Path) -> None:
        assert self.proc and self.proc.stderr
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            # ffmpeg names the url it opened, credentials included: never keep those.
            text = S.scrub(line.decode("utf-8", "replace").rstrip())
            if not base:
                m = S.START_RE.search(text)
                if m:
                    base.append(float(m.group(1)))
                    # Kept beside the segments for the repair after a crash.
                    fd = os.open(run_dir / "base", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(m.group(1))
                    continue
            if text and not text.startswith(" "):
                self._stderr.append(text)

    def _last_error(self) -> str:
        for line in reversed(self._stderr):
            if "error" in line.lower() or "fail" in line.lower() or "refused" in line.lower():
                return line[-200:]
        return self._stderr[-1][-200:] if self._stderr else ""

    def _index_new(self, run_dir: Path, base: list[float], tail: S.ListTail) -> int:
        """Index the segments ffmpeg closed since the last look (only the list's new bytes are
        read: a day's run lists thousands of segments)."""
        if not base:
            return 0  # the list is read once the run's base time is known
        fresh = tail.new_entries()
        rows: list[S.Segment] = []
        for name, s, e in fresh:
            p = run_dir / name
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                continue
            rows.append(S.Segment(self.camera.id, base[0] + s, base[0] + e,
                                  p.relative_to(self.svc.folder).as_posix(), size))
        if rows:
            self.svc.store.video_add_segments(r.row() for r in rows)
            self.segments += len(rows)
            self.last_end = rows[-1].end
            if not self.recording:
                self._came_online(rows[0].start)
            self.svc.health(self.camera.id).update_metrics(self.metrics())
        return len(fresh)

    async def _end_process(self, graceful: bool) -> None:
        p = self.proc
        if p is None or p.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            # SIGINT lets ffmpeg close the segment cleanly; a stalled one gets SIGKILL.
            p.send_signal(signal.SIGINT if graceful else signal.SIGKILL)
        try:
            await asyncio.wait_for(p.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()

    # ---- events and health ---------------------------------------------------------------
    def metrics(self) -> dict[str, int]:
        return {"segments": self.segments, "restarts": self.restarts, "stalls": self.stalls}

    def _went_offline(self, reason: str) -> None:
        reason = S.scrub(reason)
        was = self.recording
        self.recording = False
        if self.offline_since is not None and not was:
            return  # the same outage: one event, however many retries
        self.offline_since = self.last_end or time.time()
        self.offline_reason = reason
        log.warning("%s: not recording: %s", self.camera.id, reason)
        self.svc.post("camera.offline", {
            "camera": self.camera.id, "window": self.cfg.window,
            "since": self.svc.iso(self.offline_since), "reason": reason[:300]})
        self.svc.health(self.camera.id).offline(f"not recording: {reason}"[:300],
                                                self.metrics())

    def _came_online(self, first_start: float) -> None:
        self.recording = True
        data: dict[str, Any] = {"camera": self.camera.id, "window": self.cfg.window,
                                "at": self.svc.iso(first_start)}
        if self.offline_since is not None:
            gap_from = self.offline_since
            data.update({"gap_from": self.svc.iso(gap_from), "gap_to": self.svc.iso(first_start),
                         "gap_ms": max(0, int((first_start - gap_from) * 1000)),
                         "reason": self.offline_reason[:300]})
        self.offline_since = None
        log.info("%s: recording", self.camera.id)
        self.svc.post("camera.online", data)
        info = self.camera.info
        self._clock_health(info.drift_s if info else None, info.clock_set if info else False)

    async def _recheck_clock(self) -> None:
        try:
            info = await self.camera.resolve()
        except Exception as e:  # recording goes on; the next look may reach it
            log.info("%s: clock check failed: %s", self.camera.id, S.scrub(str(e)))
            return
        self._clock_health(info.drift_s, info.clock_set)

    def _clock_health(self, drift: float | None, clock_set: bool) -> None:
        h = self.svc.health(self.camera.id)
        if not self.recording:
            return
        if drift is not None and abs(drift) > self.cfg.max_drift_seconds:
            h.degraded("C", f"camera clock is {drift:+.1f} s off the box "
                       f"(bound {self.cfg.max_drift_seconds:g} s); set_clock is "
                       f"{'on but failed' if self.cfg.set_clock else 'off'}", self.metrics())
        else:
            h.ok("recording" + (" (camera clock was set)" if clock_set else ""), self.metrics())


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(ts: float, tz: Any) -> str:
    return rfc3339(datetime.fromtimestamp(ts, tz))


__all__ = ["CameraRecorder", "DomainEvent", "iso", "utc"]
