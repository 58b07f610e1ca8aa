"""The camera plugin (entry point `hallbox.devices: video`): the [video] cameras, their recording
(edge/recorder) and, with --sim, a simulated ONVIF camera for each (drivers/sim/camera.py),
listed in {data}/sim.json as {"class": "camera", "id", "window", "endpoint", "onvif"}.

It puts the video service in `HallServices.video` (API, ratings' snapshots) and adds the
`video.export` command to the central commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.camera import Camera
from edge.link.commands import add_command
from edge.recorder.command import cmd_video_export
from edge.recorder.service import VideoComponent, VideoService

if TYPE_CHECKING:
    from edge.assembly import BoxContext


def build(ctx: BoxContext) -> list[Any]:
    cfg = ctx.runtime.config.video
    if cfg is None or not cfg.cameras or not ctx.devices:
        return []
    comps: list[Any] = []
    cameras = list(cfg.cameras)
    if ctx.sim:
        from drivers.sim.camera import CameraSimHall

        sims = CameraSimHall(ctx.data_dir / "sim-cameras", cameras)
        comps.append(sims)  # started first: the recorders open them
        ctx.sims.append(sims)
        cameras = sims.configs  # the same cameras, pointed at their simulators
        ctx.sim_devices.extend(sims.entries)
    svc = VideoService(ctx.runtime, cfg, [Camera(c) for c in cameras])
    ctx.services.video = svc
    if ctx.services.ratings is not None:
        ctx.services.ratings.snapshots = svc  # a bad rating takes the window's snapshot
    add_command(ctx.services.commands, "video.export", cmd_video_export)
    comps.append(VideoComponent(svc))
    return comps
