"""A real RTSP H.264 server for simulated cameras: GStreamer's gst-rtsp-server, looping one clip.

Runs under the SYSTEM python3 (Debian's python3-gi, gir1.2-gst-rtsp-server-1.0), not the
venv: PyGObject and the typelibs are Debian packages. Started by drivers/sim/camera.py:

    /usr/bin/python3 rtsp_server.py --clip clip.h264 --fps 10 --port 8554 cam-w1 cam-w2 ...

serves rtsp://127.0.0.1:PORT/cam-w1 ... The clip is an H.264 Annex-B elementary stream encoded
once (by ffmpeg, with an access unit delimiter before every frame); the server never encodes:
each mount feeds the clip's access units through an appsrc with steadily increasing
timestamps (looping forever), h264parse and rtph264pay. A mount's pipeline is shared by all
its clients, so a recorder and a snapshot cost one pipeline. Prints "ready PORT" once
listening. SIGTERM/SIGINT stop it; SIGSTOP freezes it (a stalled camera for the tests).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

AUD = b"\x00\x00\x00\x01\x09"


def access_units(data: bytes) -> list[bytes]:
    """Split an Annex-B stream at its access unit delimiters (4-byte start code + NAL type 9)."""
    cuts = []
    i = data.find(AUD)
    while i != -1:
        cuts.append(i)
        i = data.find(AUD, i + 1)
    if not cuts:
        raise SystemExit("clip has no access unit delimiters; encode it with aud=1")
    cuts.append(len(data))
    return [data[a:b] for a, b in itertools.pairwise(cuts)]


class LoopedClip(GstRtspServer.RTSPMediaFactory):
    def __init__(self, units: list[bytes], fps: int) -> None:
        super().__init__()
        self.units = units
        self.fps = fps
        self.set_shared(True)
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=false "
            f"caps=video/x-h264,stream-format=byte-stream,alignment=au,framerate={fps}/1 "
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: Any, media: Any) -> None:
        src = media.get_element().get_by_name("src")
        state = {"n": 0}
        dur = Gst.SECOND // self.fps

        def need_data(appsrc: Any, _length: int) -> None:
            # Push a few frames per call; the live sinks pace them on the clock.
            for _ in range(4):
                n = state["n"]
                buf = Gst.Buffer.new_wrapped(self.units[n % len(self.units)])
                buf.pts = buf.dts = n * dur
                buf.duration = dur
                state["n"] = n + 1
                if appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    return

        src.connect("need-data", need_data)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--clip", required=True)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("mounts", nargs="+")
    a = p.parse_args()
    Gst.init(None)
    with open(a.clip, "rb") as f:
        units = access_units(f.read())
    server = GstRtspServer.RTSPServer()
    server.set_address(a.host)
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    for m in a.mounts:
        mounts.add_factory(f"/{m}", LoopedClip(units, a.fps))
    if server.attach(None) == 0:
        print(f"cannot listen on {a.host}:{a.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
