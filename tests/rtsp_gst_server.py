"""An independent RTSP server for the doctor's camera check: GStreamer's gst-rtsp-server.

Runs under the SYSTEM python3 (Debian's python3-gi and gir1.2-gst-rtsp-server-1.0), not the
venv. usage: /usr/bin/python3 rtsp_gst_server.py PORT MOUNT; prints "ready" once listening.
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(port: str, mount: str) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( videotestsrc is-live=true ! video/x-raw,width=64,height=48 "
                       "! rtpvrawpay name=pay0 pt=96 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(f"/{mount}", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
