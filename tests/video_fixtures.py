"""Shared pieces of the video tests: a hall config with fast cameras, simulated cameras with a
stream process each (so one can be stopped, frozen or restarted), the service, ffprobe."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from drivers.camera import Camera
from drivers.sim.camera import CameraSimHall
from edge.assembly import HallServices
from edge.config import HallConfig, parse_config
from edge.link.commands import add_command, builtin_commands
from edge.ratings import RatingService
from edge.recorder.command import cmd_video_export
from edge.recorder.service import VideoComponent, VideoService
from edge.runtime import HallRuntime

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "hall.example.toml"
FPS = 10
GOP = 10  # one keyframe a second
MANAGER = {"Authorization": "Bearer demo-manager-token"}
CENTRAL = {"Authorization": "Bearer demo-central-token"}
KIOSK = {"Authorization": "Bearer demo-kiosk-token"}


def video_config(cameras: list[dict[str, Any]] | None = None, **video: Any) -> HallConfig:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    raw.pop("devices", None)  # no serial devices here: only cameras
    raw.pop("mqtt", None)
    v: dict[str, Any] = {"segment_seconds": 1, "stall_seconds": 4, "clip_padding_seconds": 2,
                         "url_ttl_seconds": 120, "cleanup_seconds": 3600}
    v.update(video)
    v["cameras"] = cameras if cameras is not None else [
        {"id": "cam-w1", "window": 1, "onvif": "http://192.0.2.1/onvif/device_service",
         "username": "hallbox", "password": "pw-w1"}]
    raw["video"] = v
    return parse_config(raw, "test")


@asynccontextmanager
async def video_hall(tmp: Path, cfg: HallConfig,
                     clock_offset_s: float = 0.0) -> AsyncIterator[tuple[HallRuntime,
                                                                          VideoService,
                                                                          CameraSimHall]]:
    """What the camera plugin (drivers/video.py) builds, on simulators with a stream each."""
    assert cfg.video is not None
    rt = HallRuntime.open(cfg, tmp / "data", ignore_hours=True)
    rt.attach(asyncio.get_running_loop())
    rt.tick()
    # The clip is encoded once per session folder (tmp's parent is shared by a session).
    sims = CameraSimHall(tmp.parent / "sim-cameras", list(cfg.video.cameras), fps=FPS, gop=GOP,
                         separate_streams=True)
    for o in sims.onvif.values():
        o.clock_offset_s = clock_offset_s
    await sims.start()
    svc = VideoService(rt, cfg.video, [Camera(c) for c in sims.configs])
    services = HallServices(commands=builtin_commands(), video=svc)
    add_command(services.commands, "video.export", cmd_video_export)
    if cfg.rating is not None:
        services.ratings = RatingService(rt, cfg.rating)
        services.ratings.snapshots = svc
    svc.services = services  # type: ignore[attr-defined]  # for the tests' API and commands
    starter = VideoComponent(svc)
    await starter.start()
    try:
        yield rt, svc, sims
    finally:
        await starter.stop()
        await sims.stop()
        rt.close()


def ffprobe(path: Path | str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)], capture_output=True, check=True, timeout=30)
    return json.loads(out.stdout)


def events(rt: HallRuntime, type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in rt.store.events_after(0, 100_000, [type_])]
