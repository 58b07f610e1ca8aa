"""Recording for real: simulated ONVIF cameras (GStreamer RTSP), one ffmpeg each, and faults:
a killed ffmpeg, a camera that goes away and comes back, a camera that freezes; the ONVIF
simulator against the onvif-zeep-async client; the camera clock-drift warning."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from drivers.camera import Camera, CameraError
from tests.video_fixtures import events, ffprobe, video_config, video_hall
from tests.waiting import until


def test_recording_survives_kill_outage_and_stall(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = video_config()
        async with video_hall(tmp_path, cfg) as (rt, svc, sims):
            rec = svc.recorders["cam-w1"]
            await until(lambda: rec.segments >= 3, 30)
            await until(lambda: events(rt, "camera.online"), 5)  # the first segment announces it
            assert rt.health.current["cam-w1"].online

            # Files are the box user's only.
            run = next(p for p in (svc.folder / "cam-w1").iterdir() if p.is_dir())
            assert (run.stat().st_mode & 0o777) == 0o700
            assert all((f.stat().st_mode & 0o777) == 0o600 for f in run.iterdir())

            # 1. SIGKILL ffmpeg: restarted, and the segment it had open is readable and indexed.
            assert rec.proc is not None
            killed_pid, restarts = rec.proc.pid, rec.restarts
            os.kill(killed_pid, signal.SIGKILL)
            await until(lambda: rec.restarts > restarts and rec.recording, 30)
            assert rec.proc.pid != killed_pid
            last = sorted(run.glob("*.mp4"))[-1]
            info = ffprobe(last)
            assert float(info["format"]["duration"]) > 0
            assert info["streams"][0]["codec_name"] == "h264"
            assert last.relative_to(svc.folder).as_posix() in \
                svc.store.video_segment_paths("cam-w1")

            # 2. The camera goes away: camera.offline; it comes back: camera.online with the gap.
            src = sims.sources["cam-w1"]
            offline_before = len(events(rt, "camera.offline"))
            await src.stop()
            await until(lambda: len(events(rt, "camera.offline")) > offline_before, 30)
            assert not rt.health.current["cam-w1"].online
            assert rt.health.current["cam-w1"].grade == "B"
            online_before = len(events(rt, "camera.online"))
            segs_before = rec.segments
            await src.start()
            await until(lambda: len(events(rt, "camera.online")) > online_before, 40)
            await until(lambda: rec.segments > segs_before + 1, 20)
            back = events(rt, "camera.online")[-1]
            assert back["gap_ms"] > 0 and back["gap_from"] < back["gap_to"]
            off = events(rt, "camera.offline")[-1]
            assert off["since"] == back["gap_from"]

            # 3. The camera freezes (SIGSTOP keeps its sockets open): detected, restarted.
            offline_before = len(events(rt, "camera.offline"))
            src.pause()
            try:
                await until(lambda: len(events(rt, "camera.offline")) > offline_before, 30)
            finally:
                src.resume()
            reason = events(rt, "camera.offline")[-1]["reason"]
            assert "stalled" in reason or "ffmpeg exited" in reason
            segs_before = rec.segments
            await until(lambda: rec.recording and rec.segments > segs_before, 40)

            # The camera's password never reached the journal (ffmpeg's errors name the url).
            journal = json.dumps(rt.store.events_after(0, 100_000), ensure_ascii=False)
            assert "pw-w1" not in journal and "camera.offline" in journal

            # The index has no overlaps and every row's file exists.
            rows = svc.store.video_segments_between("cam-w1", 0, 1e12)
            for (s1, e1, _p1, _b1), (s2, _e2, _p2, _b2) in itertools.pairwise(rows):
                assert s1 < e1 <= s2 + 0.05
            assert all((svc.folder / p).exists() for _s, _e, p, _b in rows)

    asyncio.run(main())


def test_crash_between_file_and_index_is_repaired(tmp_path: Path) -> None:
    """Index rows lost (the box died before writing them): found again at the next start."""
    async def main() -> None:
        cfg = video_config()
        async with video_hall(tmp_path, cfg) as (_rt, svc, _sims):
            rec = svc.recorders["cam-w1"]
            await until(lambda: rec.segments >= 3, 30)
        db = tmp_path / "data" / "hallbox.db"
        import sqlite3

        con = sqlite3.connect(db)
        n = con.execute("SELECT count(*) FROM video_segments").fetchone()[0]
        con.execute("DELETE FROM video_segments WHERE id IN (SELECT id FROM video_segments "
                    "ORDER BY start DESC LIMIT 2)")
        # And the other way round: a row whose file retention deleted just before the crash.
        oldest = con.execute("SELECT path FROM video_segments ORDER BY start LIMIT 1").fetchone()[0]
        con.commit()
        con.close()
        (tmp_path / "data" / "recordings" / oldest).unlink()
        async with video_hall(tmp_path, cfg) as (rt, svc, _sims):
            # Repaired before recording starts again.
            rows = svc.store.video_segments_between("cam-w1", 0, 1e12)
            assert len(rows) >= n - 1
            assert oldest not in {p for _s, _e, p, _b in rows}
            assert all((svc.folder / p).exists() for _s, _e, p, _b in rows)
            # The gap while the box was down is announced by the first new segment.
            rec = svc.recorders["cam-w1"]
            await until(lambda: rec.recording, 30)
            await until(lambda: events(rt, "camera.online")[-1].get("reason") == "box restarted",
                        5)
            assert events(rt, "camera.online")[-1]["gap_ms"] > 0

    asyncio.run(main())


def test_onvif_simulator_answers_the_onvif_client(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = video_config()
        from drivers.sim.camera import CameraSimHall

        sims = CameraSimHall(tmp_path.parent / "sim-cameras", list(cfg.video.cameras))  # type: ignore[union-attr]
        await sims.start()
        try:
            cam = Camera(sims.configs[0])
            info = await cam.resolve()
            assert (info.manufacturer, info.model) == ("hallbox-sim", "SIM-IPC-1")
            assert info.profile == "main_h264"  # the H.264 profile, not the JPEG one listed first
            assert info.stream_uri == sims.sources["cam-w1"].url("cam-w1")
            assert info.drift_s is not None and abs(info.drift_s) < 2
            calls = sims.onvif["cam-w1"].calls
            for op in ("GetDeviceInformation", "GetProfiles", "GetStreamUri", "GetSnapshotUri",
                       "GetSystemDateAndTime"):
                assert op in calls
            jpeg = await cam.snapshot()
            assert jpeg[:2] == b"\xff\xd8"
            # The stream is real H.264 over RTSP.
            probe = ffprobe(cam.stream_url().replace("rtsp://", "rtsp://"))
            assert probe["streams"][0]["codec_name"] == "h264"
            # Wrong credentials: refused by WS-UsernameToken digest and by HTTP digest.
            bad = Camera(sims.configs[0].model_copy(update={"password": SecretStr("wrong")}))
            with pytest.raises(CameraError, match="credentials"):
                await bad.resolve()
            async with aiohttp.ClientSession(middlewares=(aiohttp.DigestAuthMiddleware(
                    "hallbox", "wrong"),)) as s, s.get(info.snapshot_uri or "") as r:
                assert r.status == 401
            # A camera whose clock is off: set when the config allows it.
            sims.onvif["cam-w1"].clock_offset_s = 120
            fixer = Camera(sims.configs[0].model_copy(update={"set_clock": True}))
            fixed = await fixer.resolve()
            assert fixed.clock_set and abs(fixed.drift_s or 99) < 2
            assert abs(sims.onvif["cam-w1"].clock_offset_s) < 2
        finally:
            await sims.stop()

    asyncio.run(main())


def test_clock_drift_is_a_health_warning(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = video_config(clock_check_seconds=5)
        async with video_hall(tmp_path, cfg, clock_offset_s=-90) as (rt, svc, sims):
            rec = svc.recorders["cam-w1"]
            await until(lambda: rec.recording, 30)
            h = rt.health.current["cam-w1"]
            assert h.online and h.grade == "C"
            assert "clock" in h.detail and "-9" in h.detail
            await until(lambda: any(e["class"] == "camera" and e["grade"] == "C"
                                    for e in events(rt, "device.health")), 5)
            # Someone sets the camera's clock: the next look clears the warning.
            sims.onvif["cam-w1"].clock_offset_s = 0
            await until(lambda: rt.health.current["cam-w1"].grade is None, 20)
            assert rt.health.current["cam-w1"].online and rec.recording

    asyncio.run(main())


def test_plain_rtsp_camera_records_and_snapshots_from_the_stream(tmp_path: Path) -> None:
    """No ONVIF: the url is the stream, a snapshot is one decoded frame of it (ffmpeg)."""
    from drivers.sim.camera import RtspSource, prepare_clip
    from edge.config.cameras import CameraConfig
    from edge.recorder.service import VideoComponent, VideoService
    from edge.runtime import HallRuntime

    async def main() -> None:
        clip, _ = prepare_clip(tmp_path.parent / "sim-cameras")
        src = RtspSource(clip, ["plain"])
        await src.start()
        cfg = video_config([{"id": "cam-w2", "window": 2, "rtsp": src.url("plain")}])
        assert cfg.video
        rt = HallRuntime.open(cfg, tmp_path / "data", ignore_hours=True)
        cam = Camera(CameraConfig(id="cam-w2", window=2, rtsp=src.url("plain")))
        svc = VideoService(rt, cfg.video, [cam])
        comp = VideoComponent(svc)
        await comp.start()
        try:
            await until(lambda: svc.recorders["cam-w2"].segments >= 2, 30)
            ref = svc.snapshot_ref(2, "20261124-B001")
            assert ref is not None
            path = await svc.take_snapshot(2, ref)
            assert path is not None and path.read_bytes()[:2] == b"\xff\xd8"
            assert (path.stat().st_mode & 0o777) == 0o600
            assert svc.snapshot_ref(3, None) is None  # window 3 has no camera
        finally:
            await comp.stop()
            await src.stop()
            rt.close()

    asyncio.run(main())
