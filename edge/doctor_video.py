"""`hallbox doctor` for the window cameras ([video]): stream reachable, clock drift, disk.

Loaded by edge/doctor.py only when the config has a [video] section with cameras. Reads the
camera settings by name (cameras[].id, rtsp, onvif, max_drift_seconds; folder, free_floor_gb),
so it does not depend on the recorder being importable.

- Stream: an RTSP OPTIONS request to the camera's stream (RFC 2326 §10.1; cameras answer it
  without credentials), or for an ONVIF camera a TCP connection to its device service.
- Clock drift: ONVIF GetSystemDateAndTime (ONVIF Core, device management; readable without
  authentication), compared with this box's clock. Plain RTSP cameras: from their health.
- Disk: free space where recordings go, against the configured floor.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from edge.doctor import Check, Context, Report, check_disk

TIMEOUT_S = 3.0
GET_TIME = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    '<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
    "</s:Body></s:Envelope>")


def rtsp_options(url: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """Does something at `url` answer RTSP? (True, status line) or (False, why)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (322 if parts.scheme == "rtsps" else 554)
    if parts.scheme == "rtsps":
        # TLS RTSP: reachability only.
        return _tcp(host, port, timeout)
    # Credentials never go on the wire or into the output.
    clean = f"rtsp://{host}:{port}{parts.path or '/'}"
    req = f"OPTIONS {clean} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: hallbox-doctor\r\n\r\n"
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(req.encode())
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return False, f"{host}:{port} unreachable: {e.strerror or e}"
    line = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    m = re.match(r"RTSP/1\.\d (\d{3})", line)
    if not m:
        return False, f"{host}:{port} does not answer RTSP ({line[:40]!r})"
    # 401 is an answer too: the camera is there and wants the credentials the recorder has.
    return True, f"RTSP {m.group(1)} from {host}:{port}"


def _tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} reachable"
    except OSError as e:
        return False, f"{host}:{port} unreachable: {e.strerror or e}"


def onvif_clock(url: str, timeout: float = TIMEOUT_S) -> datetime:
    """The camera's UTC time from ONVIF GetSystemDateAndTime (tt:SystemDateAndTime)."""
    r = httpx.post(url, content=GET_TIME, timeout=timeout, headers={
        "Content-Type": 'application/soap+xml; charset=utf-8; '
                        'action="http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime"'})
    r.raise_for_status()
    return parse_system_date_and_time(r.text)


def parse_system_date_and_time(xml: str) -> datetime:
    """UTCDateTime of a GetSystemDateAndTimeResponse (namespace prefixes vary by vendor)."""
    from xml.etree import ElementTree as ET

    root = ET.fromstring(xml)

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    utc = next((e for e in root.iter() if local(e.tag) == "UTCDateTime"), None)
    if utc is None:
        raise ValueError("no UTCDateTime in the answer")
    values: dict[str, int] = {}
    for e in utc.iter():
        if local(e.tag) in ("Year", "Month", "Day", "Hour", "Minute", "Second"):
            values[local(e.tag)] = int((e.text or "").strip())
    return datetime(values["Year"], values["Month"], values["Day"], values["Hour"],
                    values["Minute"], values["Second"], tzinfo=UTC)


@dataclass(frozen=True)
class _SimCamera:
    id: str
    onvif: str | None
    rtsp: str | None


def _simulated_cameras(data_dir: Path) -> dict[str, _SimCamera]:
    """The cameras a `hallbox run --sim` box listed in {data}/sim.json, by id."""
    try:
        entries = json.loads((data_dir / "sim.json").read_text(encoding="utf-8"))["devices"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out = {}
    for e in entries:
        if isinstance(e, dict) and e.get("class") == "camera" and isinstance(e.get("id"), str):
            onvif = e.get("onvif") if isinstance(e.get("onvif"), str) else None
            rtsp = None if onvif else e.get("endpoint")
            out[e["id"]] = _SimCamera(e["id"], onvif, rtsp if isinstance(rtsp, str) else None)
    return out


def doctor_checks(ctx: Context) -> list[Check]:
    video: Any = getattr(ctx.config, "video", None)
    if video is None:
        return []
    rep = Report()
    simulated = _simulated_cameras(ctx.data_dir)
    for configured in video.cameras:
        name = f"camera: {configured.id}"
        # A box started with --sim records its simulated cameras, not the addresses in the
        # config (which are a real hall's LAN): check what it actually records.
        cam = simulated.get(configured.id, configured)
        if getattr(cam, "rtsp", None):
            ok, what = rtsp_options(cam.rtsp)
        else:
            onvif = urlsplit(cam.onvif)
            ok, what = _tcp(onvif.hostname or "",
                            onvif.port or (443 if onvif.scheme == "https" else 80), TIMEOUT_S)
        if not ok:
            rep.add(name, "fail", what, "check the camera's power, network cable and address "
                    "(ping it from the box); its recording has a gap until it is back")
            continue
        drift_s: float | None = None
        if getattr(cam, "onvif", None):
            try:
                drift_s = (onvif_clock(cam.onvif) - datetime.now(UTC)).total_seconds()
            except (httpx.HTTPError, ValueError, KeyError) as e:
                rep.add(name, "warn", f"{what}; its clock cannot be read: {type(e).__name__}",
                        "check the ONVIF address in [video]")
                continue
        h = ctx.devices.get(cam.id)
        if h is not None and not h.get("online"):
            rep.add(name, "fail", f"{what}, but not recording: {h.get('detail')}",
                    "check the camera's credentials and stream settings; "
                    "journalctl -u hallbox | grep " + cam.id)
        elif drift_s is not None and abs(drift_s) > configured.max_drift_seconds:
            rep.add(name, "warn", f"{what}; clock {drift_s:+.0f} s off the box",
                    "set the camera to the hall's NTP server (or set_clock = true in [video]) so "
                    "recordings line up with the queue's events")
        else:
            rep.add(name, "ok", what + (f", clock {drift_s:+.1f} s" if drift_s is not None
                                        else ""))
    folder = Path(video.folder)
    if not folder.is_absolute():
        folder = ctx.data_dir / folder
    floor_mb = int(float(getattr(video, "free_floor_gb", 5.0)) * 1024)
    check_disk("disk: recordings", folder, max(floor_mb * 2, 1024), rep,
               "recordings are near their free-space floor: lower [video] retention_days or "
               "quota_gb, or give them a larger disk")
    return rep.checks
