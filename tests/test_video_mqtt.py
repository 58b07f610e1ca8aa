"""`cmd/video.export` from the central room over a real Mosquitto: signed command in, the clip
uploaded by HTTP PUT to the command's put_url, a signed reply with the clip's times out; a
refusal is a command error with its reason."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

from drivers import video
from edge.assembly import build_box
from edge.central.client import CentralBroker, send_command
from edge.events import rfc3339
from tests.link_fixtures import (
    CMD_KEY,
    SITE,
    Broker,
    box_config,
    box_password,
    broker,
    pki,
    wait_for,
)
from tests.video_fixtures import video_config

__all__ = ["broker", "pki"]


class _Upload(BaseHTTPRequestHandler):
    got: ClassVar[dict[str, Any]] = {}

    def do_PUT(self) -> None:
        n = int(self.headers["Content-Length"])
        _Upload.got = {"type": self.headers["Content-Type"], "body": self.rfile.read(n),
                       "path": self.path}
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_a: Any) -> None:
        pass


def test_video_export_command_uploads_the_clip(tmp_path: Path, broker: Broker) -> None:
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1")))
    cfg = cfg.model_copy(update={"video": video_config().video})
    loop = asyncio.new_event_loop()
    box: Any = None
    ready = threading.Event()

    def run() -> None:
        nonlocal box
        asyncio.set_event_loop(loop)
        box = build_box(cfg, tmp_path / "data", plugins=[video.build], sim=True,
                        ignore_hours=True)
        loop.run_until_complete(box.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    http = HTTPServer(("127.0.0.1", 0), _Upload)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        assert ready.wait(30)
        svc = box.services.video
        wait_for(lambda: box.link.connected, 15, "box connected")
        wait_for(lambda: svc.recorders["cam-w1"].segments >= 4, 30, "four segments recorded")
        last = svc.recorders["cam-w1"].last_end
        tz = svc.tz
        args = {"camera": "cam-w1",
                "from": rfc3339(datetime.fromtimestamp(last - 2.5, tz)),
                "to": rfc3339(datetime.fromtimestamp(last - 0.5, tz)),
                "put_url": f"http://127.0.0.1:{http.server_port}/upload/clip.mp4"}
        reply = send_command(CentralBroker(broker.central_url()), CMD_KEY, SITE, "box-1",
                             "video.export", args, timeout=30)
        assert reply is not None and reply["ok"], reply
        res = reply["result"]
        assert res["uploaded"] and res["status"] == 204 and res["camera"] == "cam-w1"
        assert datetime.fromisoformat(res["start"]).timestamp() <= last - 2.5 + 0.01
        assert _Upload.got["type"] == "video/mp4" and _Upload.got["path"] == "/upload/clip.mp4"
        assert _Upload.got["body"][4:8] == b"ftyp" and len(_Upload.got["body"]) == res["bytes"]
        # A refusal: a range before any recording, said as a command error with its reason.
        early = time.time() - 3600
        reply = send_command(CentralBroker(broker.central_url()), CMD_KEY, SITE, "box-1",
                             "video.export", {
                                 "camera": "cam-w1",
                                 "from": rfc3339(datetime.fromtimestamp(early, tz)),
                                 "to": rfc3339(datetime.fromtimestamp(early + 60, tz))},
                             timeout=30)
        assert reply is not None and not reply["ok"]
        assert reply["error"]["code"] == "no-recording"
    finally:
        http.shutdown()
        if box is not None:
            asyncio.run_coroutine_threadsafe(box.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            box.close()
