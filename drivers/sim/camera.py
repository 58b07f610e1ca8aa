"""Simulated ONVIF cameras on loopback: an ONVIF device and media service over HTTP/SOAP (with
WS-UsernameToken digest credentials, as real cameras check them) and a real RTSP H.264 stream.

The stream is GStreamer's RTSP server (drivers/sim/rtsp_server.py under the system python3)
looping one clip that ffmpeg encoded once at setup: nothing is encoded per camera, so a hall of
cameras costs a few pipelines that only packetise. The ONVIF side answers what the box asks
(GetServices, GetCapabilities, GetDeviceInformation, GetSystemDateAndTime,
SetSystemDateAndTime, GetProfiles, GetStreamUri, GetSnapshotUri) and serves the snapshot JPEG
behind HTTP digest auth; it is checked against the onvif-zeep-async client in the tests. Each
camera has its own clock offset, so a drifting camera clock can be simulated.

Nothing here multicasts: each camera answers WS-Discovery probes sent to it (unicast, on its
own loopback UDP port) and never announces itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from pydantic import SecretStr

from edge.config.cameras import CameraConfig
from edge.recorder.discovery import ProbeResponder
from edge.recorder.segments import die_with_parent

log = logging.getLogger(__name__)
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi and the GStreamer typelibs
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
}
AUTHLESS = {"GetSystemDateAndTime"}  # ONVIF Core: readable before authentication
REALM = "hallbox-sim-camera"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_clip(folder: Path, *, fps: int = 10, gop: int = 10, width: int = 640,
                 height: int = 360, seconds: int = 20) -> tuple[Path, Path]:
    """Encode the looped clip (H.264 Annex-B, an AUD before each frame) and a snapshot, once."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"clip-{width}x{height}-{fps}fps-g{gop}-{seconds}s"
    clip, jpeg = folder / f"{stem}.h264", folder / f"{stem}.jpg"
    if not clip.exists():
        tmp = clip.with_suffix(".tmp")
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
             "-i", f"testsrc2=size={width}x{height}:rate={fps}", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-bf", "0",
             "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-b:v", "300k",
             "-x264-params", "aud=1:repeat-headers=1", "-f", "h264", str(tmp)],
            check=True)
        tmp.rename(clip)
    if not jpeg.exists():
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                        "-f", "h264", "-i", str(clip), "-frames:v", "1", str(jpeg)], check=True)
    return clip, jpeg


class RtspSource:
    """One RTSP server process serving some mounts; stop/start/pause it to fake faults."""

    def __init__(self, clip: Path, mounts: list[str], fps: int = 10,
                 port: int | None = None) -> None:
        self.clip, self.mounts, self.fps = clip, mounts, fps
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SERVER), "--clip", str(self.clip), "--fps", str(self.fps),
             "--port", str(self.port), *self.mounts],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=die_with_parent)  # a killed box leaves no camera server behind
        assert self.proc.stdout
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), 15)
        if not line.startswith(b"ready"):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"RTSP server did not start: {line!r} {err[-300:]}")

    async def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
            p.terminate()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, p.wait), 5)
        except TimeoutError:
            p.kill()
            await loop.run_in_executor(None, p.wait)

    def pause(self) -> None:
        """SIGSTOP: the TCP connections stay open and nothing is sent (a frozen camera)."""
        assert self.proc
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc
        os.kill(self.proc.pid, signal.SIGCONT)


def _soap(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:tds="{NS["tds"]}" xmlns:trt="{NS["trt"]}" '
        f'xmlns:tt="{NS["tt"]}"><s:Body>{body}</s:Body></s:Envelope>').encode()


def _fault(subcode: str, text: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:ter="http://www.onvif.org/ver10/error">'
        "<s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode>"
        f"<s:Value>ter:{subcode}</s:Value></s:Subcode></s:Code><s:Reason>"
        f'<s:Text xml:lang="en">{escape(text)}</s:Text></s:Reason></s:Fault></s:Body>'
        "</s:Envelope>").encode()


def _dt_xml(d: datetime) -> str:
    return (f"<tt:Time><tt:Hour>{d.hour}</tt:Hour><tt:Minute>{d.minute}</tt:Minute>"
            f"<tt:Second>{d.second}</tt:Second></tt:Time><tt:Date><tt:Year>{d.year}</tt:Year>"
            f"<tt:Month>{d.month}</tt:Month><tt:Day>{d.day}</tt:Day></tt:Date>")


class OnvifCameraSim:
    """One simulated camera's ONVIF endpoint (device + media service, snapshot)."""

    def __init__(self, camera_id: str, username: str, password: str, stream_uri: str,
                 snapshot: Path, *, width: int = 640, height: int = 360, fps: int = 10,
                 gop: int = 10, port: int | None = None,
                 clock_offset_s: float = 0.0) -> None:
        self.id = camera_id
        self.username, self.password = username, password
        self.stream_uri = stream_uri
        self.snapshot = snapshot
        self.width, self.height, self.fps, self.gop = width, height, fps, gop
        self.port = port or free_port()
        self.clock_offset_s = clock_offset_s  # the camera's clock minus the true time
        self.discovery_port = free_udp_port()  # WS-Discovery, unicast probes only
        self.endpoint_ref = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, camera_id)}"
        self.calls: list[str] = []  # operation names, for tests
        self.auth_failures = 0
        self._server: asyncio.AbstractServer | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._nonces: set[str] = set()

    @property
    def device_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/onvif/device_service"

    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: ProbeResponder(self.endpoint_ref, [self.device_url],
                                   ["onvif://www.onvif.org/type/video_encoder",
                                    f"onvif://www.onvif.org/name/hallbox-sim-{self.id}"]),
            local_addr=("127.0.0.1", self.discovery_port))

    async def stop(self) -> None:
        if self._udp:
            self._udp.close()
            self._udp = None
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    # ---- HTTP --------------------------------------------------------------------------------
    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
                if len(head) > 16384:
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = ([*lines[0].split(" ", 2), "", ""])[:3]
                headers = {k.strip().lower(): v.strip() for k, v in
                           (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                n = int(headers.get("content-length", "0") or 0)
                if n > 1 << 20:
                    break
                body = await r.readexactly(n) if n else b""
                status, ctype, payload, extra = self._route(method, target, headers, body)
                hdrs = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}",
                        f"Content-Length: {len(payload)}", *extra]
                w.write(("\r\n".join(hdrs) + "\r\n\r\n").encode() + payload)
                await w.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError,
                asyncio.LimitOverrunError):
            pass
        finally:
            w.close()

    def _route(self, method: str, target: str, headers: dict[str, str],
               body: bytes) -> tuple[str, str, bytes, list[str]]:
        if method == "GET" and target.split("?")[0] == "/onvif/snapshot.jpg":
            if not self._digest_ok(method, headers.get("authorization", "")):
                nonce = secrets.token_hex(16)
                self._nonces.add(nonce)
                return ("401 Unauthorized", "text/plain", b"unauthorized",
                        [f'WWW-Authenticate: Digest realm="{REALM}", qop="auth", '
                         f'nonce="{nonce}", algorithm=MD5'])
            return "200 OK", "image/jpeg", self.snapshot.read_bytes(), []
        if method == "POST" and target in ("/onvif/device_service", "/onvif/media_service"):
            status, payload = self._soap(body)
            return status, "application/soap+xml; charset=utf-8", payload, []
        return "404 Not Found", "text/plain", b"not found", []

    def _digest_ok(self, method: str, auth: str) -> bool:
        if not auth.lower().startswith("digest "):
            return False
        fields: dict[str, str] = {}
        for part in auth[7:].split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                fields[k.strip().lower()] = v.strip().strip('"')
        need = ("username", "realm", "nonce", "uri", "response")
        if any(k not in fields for k in need) or fields["nonce"] not in self._nonces:
            return False

        def md5(x: str) -> str:
            return hashlib.md5(x.encode()).hexdigest()

        ha1 = md5(f"{self.username}:{fields['realm']}:{self.password}")
        ha2 = md5(f"{method}:{fields['uri']}")
        if fields.get("qop"):
            want = md5(f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:"
                       f"{fields.get('cnonce', '')}:{fields['qop']}:{ha2}")
        else:
            want = md5(f"{ha1}:{fields['nonce']}:{ha2}")
        return fields["username"] == self.username and secrets.compare_digest(
            want, fields["response"])

    # ---- SOAP --------------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    def _auth_ok(self, env: ET.Element) -> bool:
        tok = env.find("s:Header/wsse:Security/wsse:UsernameToken", NS)
        if tok is None:
            return False
        user = tok.findtext("wsse:Username", "", NS)
        pw = tok.find("wsse:Password", NS)
        nonce = tok.findtext("wsse:Nonce", "", NS)
        created = tok.findtext("wsu:Created", "", NS)
        if pw is None or user != self.username:
            return False
        if "PasswordDigest" in (pw.get("Type") or ""):
            try:
                raw_nonce = base64.b64decode(nonce)
            except ValueError:
                return False
            want = base64.b64encode(hashlib.sha1(
                raw_nonce + created.encode() + self.password.encode()).digest()).decode()
            return secrets.compare_digest(want, (pw.text or "").strip())
        return secrets.compare_digest(self.password, pw.text or "")

    def _soap(self, body: bytes) -> tuple[str, bytes]:
        try:
            env = ET.fromstring(body)
        except ET.ParseError as e:
            return "400 Bad Request", _fault("WellFormed", f"not XML: {e}")
        req = env.find("s:Body", NS)
        if req is None or len(req) == 0:
            return "400 Bad Request", _fault("WellFormed", "no SOAP body")
        op_el = req[0]
        op = op_el.tag.rsplit("}", 1)[-1]
        self.calls.append(op)
        if op not in AUTHLESS and not self._auth_ok(env):
            self.auth_failures += 1
            return "400 Bad Request", _fault("NotAuthorized", "the credentials are wrong")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            return "400 Bad Request", _fault("ActionNotSupported", f"{op} is not supported")
        return "200 OK", _soap(handler(op_el))

    def op_GetServices(self, _req: ET.Element) -> str:
        def svc(ns: str, path: str) -> str:
            return (f"<tds:Service><tds:Namespace>{ns}</tds:Namespace>"
                    f"<tds:XAddr>{self.base()}{path}</tds:XAddr><tds:Version>"
                    "<tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>")
        return ("<tds:GetServicesResponse>" + svc(NS["tds"], "/onvif/device_service")
                + svc(NS["trt"], "/onvif/media_service") + "</tds:GetServicesResponse>")

    def op_GetCapabilities(self, _req: ET.Element) -> str:
        return ("<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{self.base()}/onvif/device_service</tt:XAddr></tt:Device>"
                f"<tt:Media><tt:XAddr>{self.base()}/onvif/media_service</tt:XAddr>"
                "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
                "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
                "</tt:StreamingCapabilities></tt:Media>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>")

    def op_GetDeviceInformation(self, _req: ET.Element) -> str:
        return ("<tds:GetDeviceInformationResponse><tds:Manufacturer>hallbox-sim"
                "</tds:Manufacturer><tds:Model>SIM-IPC-1</tds:Model><tds:FirmwareVersion>1.0"
                f"</tds:FirmwareVersion><tds:SerialNumber>SIM-{escape(self.id)}"
                "</tds:SerialNumber><tds:HardwareId>sim</tds:HardwareId>"
                "</tds:GetDeviceInformationResponse>")

    def op_GetSystemDateAndTime(self, _req: ET.Element) -> str:
        now = self.now()
        local = now.astimezone(datetime.now().astimezone().tzinfo)
        return ("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
                "<tt:DateTimeType>Manual</tt:DateTimeType>"
                "<tt:DaylightSavings>false</tt:DaylightSavings>"
                "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
                f"<tt:UTCDateTime>{_dt_xml(now)}</tt:UTCDateTime>"
                f"<tt:LocalDateTime>{_dt_xml(local)}</tt:LocalDateTime>"
                "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>")

    def op_SetSystemDateAndTime(self, req: ET.Element) -> str:
        u = req.find("tds:UTCDateTime", NS)
        if u is not None:
            def num(path: str) -> int:
                return int(u.findtext(path, "0", NS))
            t = datetime(num("tt:Date/tt:Year"), num("tt:Date/tt:Month"), num("tt:Date/tt:Day"),
                         num("tt:Time/tt:Hour"), num("tt:Time/tt:Minute"),
                         num("tt:Time/tt:Second"), tzinfo=UTC)
            self.clock_offset_s = (t - datetime.now(UTC)).total_seconds()
        return "<tds:SetSystemDateAndTimeResponse/>"

    def _profile(self, token: str, name: str, encoding: str, w: int, h: int) -> str:
        h264 = (f"<tt:H264><tt:GovLength>{self.gop}</tt:GovLength>"
                "<tt:H264Profile>Main</tt:H264Profile></tt:H264>") if encoding == "H264" else ""
        return (
            f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{name}</tt:Name>'
            '<tt:VideoSourceConfiguration token="vsc0"><tt:Name>vsc0</tt:Name>'
            "<tt:UseCount>2</tt:UseCount><tt:SourceToken>vs0</tt:SourceToken>"
            f'<tt:Bounds x="0" y="0" width="{self.width}" height="{self.height}"/>'
            "</tt:VideoSourceConfiguration>"
            f'<tt:VideoEncoderConfiguration token="vec-{token}"><tt:Name>{name}</tt:Name>'
            f"<tt:UseCount>1</tt:UseCount><tt:Encoding>{encoding}</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height>"
            "</tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl>"
            f"<tt:FrameRateLimit>{self.fps}</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>300</tt:BitrateLimit>"
            f"</tt:RateControl>{h264}<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type>"
            "<tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port>"
            "<tt:TTL>1</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
            "<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>"
            "</trt:Profiles>")

    def op_GetProfiles(self, _req: ET.Element) -> str:
        # A JPEG sub-profile first: the box must pick the H.264 one.
        return ("<trt:GetProfilesResponse>"
                + self._profile("sub_jpeg", "sub", "JPEG", 320, 180)
                + self._profile("main_h264", "main", "H264", self.width, self.height)
                + "</trt:GetProfilesResponse>")

    def _uri(self, tag: str, uri: str) -> str:
        return (f"<trt:{tag}><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
                "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
                f"<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:{tag}>")

    def op_GetStreamUri(self, req: ET.Element) -> str:
        token = req.findtext("trt:ProfileToken", "", NS)
        if token != "main_h264":
            return self._uri("GetStreamUriResponse", "rtsp://127.0.0.1:1/no-such-profile")
        return self._uri("GetStreamUriResponse", self.stream_uri)

    def op_GetSnapshotUri(self, _req: ET.Element) -> str:
        return self._uri("GetSnapshotUriResponse", f"{self.base()}/onvif/snapshot.jpg")


class CameraSimHall:
    """The demo's cameras: one RTSP server for all of them, an ONVIF endpoint each.

    Ports are chosen at construction, so `configs` (the cameras pointed at their simulators)
    and `entries` (for sim.json) are known before anything starts.
    """

    name = "camera-sims"
    device_class = "camera"

    def __init__(self, folder: Path, cameras: list[CameraConfig], *, fps: int = 10,
                 gop: int = 10, separate_streams: bool = False) -> None:
        self.folder = folder
        self.fps, self.gop = fps, gop
        self.clip, self.jpeg = folder / "pending.h264", folder / "pending.jpg"
        self.sources: dict[str, RtspSource] = {}
        shared: RtspSource | None = None
        self.onvif: dict[str, OnvifCameraSim] = {}
        self.configs: list[CameraConfig] = []
        self.entries: list[dict[str, Any]] = []
        for c in cameras:
            if separate_streams or shared is None:
                src = RtspSource(self.clip, [], fps)
                if not separate_streams:
                    shared = src
            else:
                src = shared
            src.mounts.append(c.id)
            self.sources[c.id] = src
            user = c.username or "admin"
            pw = c.password.get_secret_value() if c.password else "sim-camera"
            sim = OnvifCameraSim(c.id, user, pw, src.url(c.id), self.jpeg, fps=fps, gop=gop)
            self.onvif[c.id] = sim
            self.configs.append(c.model_copy(update={
                "onvif": sim.device_url, "rtsp": None, "username": user,
                "password": SecretStr(pw)}))
            self.entries.append({"class": "camera", "id": c.id, "window": c.window,
                                 "endpoint": src.url(c.id), "onvif": sim.device_url})

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        clip, jpeg = await loop.run_in_executor(
            None, lambda: prepare_clip(self.folder, fps=self.fps, gop=self.gop))
        self.clip, self.jpeg = clip, jpeg
        for s in {id(s): s for s in self.sources.values()}.values():
            s.clip = clip
            await s.start()
        for o in self.onvif.values():
            o.snapshot = jpeg
            await o.start()
        log.info("%d simulated camera(s) ready in %.1f s", len(self.onvif),
                 time.monotonic() - t0)

    async def stop(self) -> None:
        for o in self.onvif.values():
            await o.stop()
        for s in {id(s): s for s in self.sources.values()}.values():
            await s.stop()


if __name__ == "__main__":  # pragma: no cover - a manual helper
    print(prepare_clip(Path(sys.argv[1] if len(sys.argv) > 1 else "var/sim-cameras")))
