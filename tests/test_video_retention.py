"""Retention by quota and by days (the index follows the files), and the [video] config checks."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from edge.config import ConfigError
from edge.recorder.service import VideoService
from edge.runtime import HallRuntime
from tests.video_fixtures import video_config, video_hall
from tests.waiting import until


def test_quota_deletes_the_oldest_and_the_index_follows(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = video_config()
        async with video_hall(tmp_path, cfg) as (_rt, svc, _sims):
            rec = svc.recorders["cam-w1"]
            await until(lambda: rec.segments >= 6, 30)
            rows = svc.store.video_segments_between("cam-w1", 0, 1e12)
            total = svc.store.video_total_bytes()
            keep = sum(b for _s, _e, _p, b in rows[-3:])
            svc.retention.quota_bytes = keep  # the last three fit, the older do not
            svc.retention.floor_bytes = 0
            n = svc.retention.sweep()
            after = svc.store.video_segments_between("cam-w1", 0, 1e12)
            assert n >= len(rows) - 3
            assert svc.store.video_total_bytes() <= keep
            assert svc.store.video_total_bytes() < total
            # Oldest first: what is left is the newest, every row's file exists, the rest gone.
            kept = [r[2] for r in rows if r[2] in {a[2] for a in after}]
            assert kept == [r[2] for r in rows[len(rows) - len(kept):]]  # a suffix: oldest went
            assert all((svc.folder / p).exists() for _s, _e, p, _b in after)
            gone = [p for _s, _e, p, _b in rows if p not in {a[2] for a in after}]
            assert gone and not any((svc.folder / p).exists() for p in gone)
            assert gone[0] == rows[0][2]

    asyncio.run(main())


def test_days_and_free_space_floor(tmp_path: Path) -> None:
    cfg = video_config(retention_days=2)
    rt = HallRuntime.open(cfg, tmp_path / "data", ignore_hours=True)
    try:
        assert cfg.video is not None
        svc = VideoService(rt, cfg.video, [])
        run = svc.folder / "cam-w1" / f"{int(time.time() * 1000) - 10 * 86400_000:013d}"
        run.mkdir(parents=True)
        sample = Path(__file__).resolve()
        now = time.time()
        rows = []
        for i, age_days in enumerate([5, 3, 1, 0.5]):
            f = run / f"{i:06d}.mp4"
            shutil.copy(sample, f)
            start = now - age_days * 86400
            rows.append(("cam-w1", start, start + 10, f.relative_to(svc.folder).as_posix(),
                         f.stat().st_size))
        svc.store.video_add_segments(rows)
        snaps = svc.folder / "_snapshots" / "cam-w1"
        snaps.mkdir(parents=True)
        old_snap, new_snap = snaps / "old.jpg", snaps / "new.jpg"
        for p, age_days in ((old_snap, 3), (new_snap, 1)):
            p.write_bytes(b"\xff\xd8")
            os.utime(p, (now - age_days * 86400, now - age_days * 86400))
        svc.retention.floor_bytes = 0
        assert svc.retention.sweep(now) == 2  # older than 2 days
        assert not old_snap.exists() and new_snap.exists()
        left = svc.store.video_segments_between("cam-w1", 0, 1e12)
        assert [r[2] for r in left] == [rows[2][3], rows[3][3]]
        assert not (svc.folder / rows[0][3]).exists()
        # A floor above the disk's free space: everything goes, oldest first.
        svc.retention.floor_bytes = 1 << 62
        assert svc.retention.sweep(now) == 2
        assert svc.store.video_total_bytes() == 0
    finally:
        rt.close()


@pytest.mark.parametrize(("cameras", "path", "msg"), [
    ([{"id": "a", "window": 1, "rtsp": "rtsp://x/1"}, {"id": "b", "window": 1,
                                                       "rtsp": "rtsp://x/2"}],
     "video.cameras[1].window", "already has camera 'a'"),
    ([{"id": "a", "window": 99, "rtsp": "rtsp://x/1"}], "video.cameras[0].window",
     "unknown window 99"),
    ([{"id": "a", "window": 1}], "video.cameras[0]", "exactly one of onvif"),
    ([{"id": "a", "window": 1, "rtsp": "rtsp://x/1"}, {"id": "a", "rtsp": "rtsp://x/2"}],
     "video.cameras[1].id", "already used"),
    ([{"id": "a", "window": 1, "rtsp": "rtsp://x/1", "passwd": "x"}],
     "video.cameras[0].passwd", "Extra inputs"),
])
def test_config_refuses_bad_bindings(cameras: list[dict[str, object]], path: str,
                                     msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        video_config(cameras)
    assert any(i.path == path and msg in i.message for i in e.value.issues), e.value


def test_camera_credentials_are_redacted_from_config_get(tmp_path: Path) -> None:
    from edge.link.commands import CommandContext, cmd_config_get

    cfg = video_config()
    rt = HallRuntime.open(cfg, tmp_path / "data", ignore_hours=True)
    try:
        out = cmd_config_get(CommandContext(rt, None, "c1", "config.get"), {})
        cam = out["config"]["video"]["cameras"][0]
        assert "pw-w1" not in str(out) and cam["password"] == "<redacted>"
    finally:
        rt.close()
