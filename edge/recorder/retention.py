"""Retention: recordings older than `retention_days` go, and the oldest go first whenever the
recordings exceed `quota_gb` or the disk's free space falls under `free_floor_gb`. Bad
ratings' snapshots follow `retention_days` too.

A file is deleted before its index row: a crash in between leaves a row without a file, which
clips skip and the next start prunes; never a file nobody can find. Expired clips go too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge.recorder.segments import RUN_RE

if TYPE_CHECKING:
    from edge.recorder.service import VideoService

log = logging.getLogger(__name__)
GB = 1024**3
BATCH = 200


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class Retention:
    name = "video-retention"

    def __init__(self, svc: VideoService) -> None:
        self.svc = svc
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None
        # Tests and the bench set these to exercise the quota path on a small disk.
        self.quota_bytes = int(svc.cfg.quota_gb * GB)
        self.floor_bytes = int(svc.cfg.free_floor_gb * GB)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:
                log.exception("video retention sweep failed; retrying")
            await asyncio.sleep(self.svc.cfg.cleanup_seconds)

    def sweep(self, now: float | None = None) -> int:
        """One pass; returns how many segments were deleted."""
        store, folder = self.svc.store, self.svc.folder
        now = time.time() if now is None else now
        horizon = now - self.svc.cfg.retention_days * 86400
        n = 0
        while True:
            rows = store.video_oldest_segments(BATCH)
            if not rows:
                break
            total = store.video_total_bytes()
            free = free_bytes(folder)
            doomed: list[int] = []
            for seg_id, path, end, size in rows:
                over = total > self.quota_bytes or free < self.floor_bytes
                if end >= horizon and not over:
                    break
                with contextlib.suppress(FileNotFoundError):
                    (folder / path).unlink()
                doomed.append(seg_id)
                total -= size
                free += size
            if not doomed:
                break
            store.video_delete_segments(doomed)
            n += len(doomed)
            if len(doomed) < len(rows):
                break
        self._drop_old_snapshots(horizon)
        for clip_id, path in store.video_expired_clips(now):
            with contextlib.suppress(FileNotFoundError):
                (folder / path).unlink()
            store.video_delete_clip(clip_id)
        self._drop_empty_runs(now)
        if n:
            log.info("video retention: deleted %d segment(s)", n)
        self.deleted += n
        return n

    def _drop_old_snapshots(self, horizon: float) -> None:
        """Bad ratings' snapshots are kept as long as the recordings."""
        from edge.recorder.service import SNAPSHOTS_DIR

        root = self.svc.folder / SNAPSHOTS_DIR
        if not root.is_dir():
            return
        for p in root.glob("*/*.jpg"):
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < horizon:
                    p.unlink()

    def _drop_empty_runs(self, now: float) -> None:
        for cam in self.svc.recorders:
            d = self.svc.folder / cam
            if not d.is_dir():
                continue
            for run in d.iterdir():
                if not (run.is_dir() and RUN_RE.fullmatch(run.name)):
                    continue
                if now - int(run.name) / 1000 < 3600:
                    continue  # maybe the run being written
                if not any(p.suffix == ".mp4" for p in run.iterdir()):
                    for p in run.iterdir():
                        p.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        run.rmdir()
