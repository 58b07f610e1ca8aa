"""The doctor's camera check: RTSP OPTIONS against GStreamer's RTSP server (an independent
implementation), ONVIF GetSystemDateAndTime for the clock drift, the recordings' disk.

The [video] config is another feature's; the check reads it by field name, so here it gets
plain objects with those names (cameras[].id/rtsp/onvif/max_drift_seconds, folder,
free_floor_gb).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge.doctor import Context, Report, run_area
from edge.doctor_video import parse_system_date_and_time, rtsp_options
from tests.ops_fixtures import ROOT, free_port

SYSTEM_PY = "/usr/bin/python3"


@pytest.fixture
def rtsp_server() -> Iterator[str]:
    probe = subprocess.run([SYSTEM_PY, "-c", "import gi; gi.require_version('GstRtspServer', "
                            "'1.0'); from gi.repository import GstRtspServer"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("python3-gi / gir1.2-gst-rtsp-server-1.0 missing (APT_PACKAGES)")
    port = free_port()
    proc = subprocess.Popen([SYSTEM_PY, str(ROOT / "tests/rtsp_gst_server.py"), str(port),
                             "cam-w1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield f"rtsp://viewer:cam-secret@127.0.0.1:{port}/cam-w1"
    finally:
        proc.terminate()
        proc.wait(10)


# An answer as the ONVIF Core specification's device management service defines it
# (GetSystemDateAndTimeResponse / tt:SystemDateAndTime / tt:UTCDateTime), with the prefixes a
# camera may choose.
ONVIF_ANSWER = """<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope"
  xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema">
 <SOAP-ENV:Body><tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>
  <tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>
  <tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone>
  <tt:UTCDateTime><tt:Time><tt:Hour>{h}</tt:Hour><tt:Minute>{mi}</tt:Minute>
   <tt:Second>{s}</tt:Second></tt:Time>
   <tt:Date><tt:Year>{y}</tt:Year><tt:Month>{mo}</tt:Month><tt:Day>{d}</tt:Day></tt:Date>
  </tt:UTCDateTime>
 </tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse></SOAP-ENV:Body>
</SOAP-ENV:Envelope>"""


def onvif_answer(t: datetime) -> str:
    return ONVIF_ANSWER.format(h=t.hour, mi=t.minute, s=t.second, y=t.year, mo=t.month,
                               d=t.day)


@pytest.fixture
def onvif_camera() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"offset": timedelta(0), "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"].append(body.decode())
            out = onvif_answer(datetime.now(UTC) + state["offset"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/soap+xml")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{srv.server_address[1]}/onvif/device_service"
    yield state
    srv.shutdown()


@dataclass
class Cam:
    id: str
    rtsp: str | None = None
    onvif: str | None = None
    max_drift_seconds: float = 2.0


@dataclass
class Video:
    cameras: list[Cam]
    folder: str = "recordings"
    free_floor_gb: float = 0.001


@dataclass
class Cfg:
    video: Video
    extra: dict[str, Any] = field(default_factory=dict)


def test_rtsp_options_against_gstreamer(rtsp_server: str) -> None:
    ok, what = rtsp_options(rtsp_server)
    assert ok and what.startswith("RTSP 200"), what
    assert "cam-secret" not in what
    closed = f"rtsp://127.0.0.1:{free_port()}/x"
    ok, what = rtsp_options(closed)
    assert not ok and "unreachable" in what


def test_rtsp_options_refuses_a_non_rtsp_answer(onvif_camera: dict[str, Any]) -> None:
    port = onvif_camera["url"].split(":")[2].split("/")[0]
    ok, what = rtsp_options(f"rtsp://127.0.0.1:{port}/x")
    assert not ok and "does not answer RTSP" in what


def test_camera_checks_in_the_doctor(tmp_path: Path, rtsp_server: str,
                                     onvif_camera: dict[str, Any]) -> None:
    onvif_camera["offset"] = timedelta(seconds=120)
    cfg = Cfg(Video([Cam("cam-w1", rtsp=rtsp_server), Cam("cam-w2", onvif=onvif_camera["url"]),
                     Cam("cam-w3", rtsp=f"rtsp://127.0.0.1:{free_port()}/gone")]))
    ctx = Context(tmp_path / "hall.toml", tmp_path, config=cfg)  # type: ignore[arg-type]
    ctx.live = {"seq": 1}
    ctx.devices = {"cam-w1": {"device": "cam-w1", "online": True, "grade": None}}
    rep = Report()
    run_area("video", "edge.doctor_video", ctx, rep)
    by = {c.name: c for c in rep.checks}
    assert by["camera: cam-w1"].status == "ok"
    # The camera's answer has whole seconds: 119 or 120 s ahead.
    assert by["camera: cam-w2"].status == "warn"
    assert re.search(r"clock \+1(19|20) s off", by["camera: cam-w2"].detail)
    assert "GetSystemDateAndTime" in onvif_camera["requests"][0]
    assert by["camera: cam-w3"].status == "fail" and by["camera: cam-w3"].fix
    assert by["disk: recordings"].status == "ok"
    # Back in time: within the allowed drift.
    onvif_camera["offset"] = timedelta(seconds=1)
    rep = Report()
    run_area("video", "edge.doctor_video", ctx, rep)
    assert {c.name: c for c in rep.checks}["camera: cam-w2"].status == "ok"
    # Recording stopped although the camera answers: the health says so.
    ctx.devices["cam-w1"] = {"device": "cam-w1", "online": False, "detail": "ffmpeg stalled"}
    rep = Report()
    run_area("video", "edge.doctor_video", ctx, rep)
    assert "ffmpeg stalled" in {c.name: c for c in rep.checks}["camera: cam-w1"].detail


def test_parse_system_date_and_time() -> None:
    t = datetime(2026, 11, 24, 4, 50, 7, tzinfo=UTC)
    assert parse_system_date_and_time(onvif_answer(t)) == t
    with pytest.raises(ValueError):
        parse_system_date_and_time("<a/>")


def test_a_simulated_hall_is_checked_at_its_simulated_cameras(
        tmp_path: Path, rtsp_server: str, onvif_camera: dict[str, Any]) -> None:
    """`hallbox run --sim` records the cameras of sim.json, not the config's (a real hall's LAN
    addresses): the doctor checks those. The configured addresses here are closed loopback
    ports, so checking them instead would fail."""
    dead = f"http://127.0.0.1:{free_port()}/onvif/device_service"
    cfg = Cfg(Video([Cam("cam-w1", onvif=dead), Cam("cam-w2", onvif=dead)]))
    (tmp_path / "sim.json").write_text(json.dumps({"devices": [
        {"class": "camera", "id": "cam-w1", "window": 1, "endpoint": rtsp_server,
         "onvif": onvif_camera["url"]},
        {"class": "printer", "id": "printer-kiosk-1", "endpoint": "/dev/null"}]}),
        encoding="utf-8")
    ctx = Context(tmp_path / "hall.toml", tmp_path, config=cfg)  # type: ignore[arg-type]
    rep = Report()
    run_area("video", "edge.doctor_video", ctx, rep)
    by = {c.name: c for c in rep.checks}
    assert by["camera: cam-w1"].status == "ok", by["camera: cam-w1"]
    assert onvif_camera["requests"], "the simulated camera was asked for its clock"
    # Not in sim.json: its configured address is what the box would record.
    assert by["camera: cam-w2"].status == "fail"
