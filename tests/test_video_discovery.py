"""`hallbox cameras discover`: WS-Discovery checked against the `wsdiscovery` package's codec,
unicast on loopback against a simulated camera, multicast only inside a network namespace this
test creates (skipped when the container does not allow one), and fuzzed parsers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsdiscovery import QName, Scope
from wsdiscovery.actions.probematch import constructProbeMatch
from wsdiscovery.message import createSOAPMessage, parseSOAPMessage
from wsdiscovery.namespaces import NS_ACTION_PROBE, NS_ACTION_PROBE_MATCH
from wsdiscovery.service import Service

from drivers.sim.camera import CameraSimHall
from edge.recorder import discovery as wsd
from tests.video_fixtures import video_config

ROOT = Path(__file__).resolve().parents[1]
DN = "http://www.onvif.org/ver10/network/wsdl"


def test_probe_is_what_wsdiscovery_reads() -> None:
    mid, data = wsd.probe_message()
    env = parseSOAPMessage(data.decode(), "127.0.0.1")
    assert env.getAction() == NS_ACTION_PROBE
    assert env.getMessageId() == mid
    assert [(t.getNamespace(), t.getLocalname()) for t in env.getTypes()] == [
        (DN, "NetworkVideoTransmitter")]


def test_probe_matches_both_ways() -> None:
    # wsdiscovery's ProbeMatch -> our parser
    mid = uuid.uuid4().urn
    svc = Service([QName(DN, "NetworkVideoTransmitter", "dn")],
                  [Scope("onvif://www.onvif.org/name/cam")],
                  ["http://192.0.2.7/onvif/device_service"], "urn:uuid:1234", 1)
    theirs = createSOAPMessage(constructProbeMatch([svc], mid))
    got = wsd.parse_probe_matches(theirs.encode() if isinstance(theirs, str) else theirs, mid)
    assert [(m.address, m.xaddrs) for m in got] == [
        ("urn:uuid:1234", ["http://192.0.2.7/onvif/device_service"])]
    assert wsd.parse_probe_matches(theirs.encode() if isinstance(theirs, str) else theirs,
                                   "urn:uuid:other") == []
    # ours -> wsdiscovery's parser
    ours = wsd.probe_matches_message(mid, "urn:uuid:5678", ["http://127.0.0.1:1/x"],
                                     ["onvif://www.onvif.org/type/video_encoder"])
    env = parseSOAPMessage(ours.decode(), "127.0.0.1")
    assert env.getAction() == NS_ACTION_PROBE_MATCH and env.getRelatesTo() == mid
    m = env.getProbeResolveMatches()[0]
    assert m.getXAddrs() == ["http://127.0.0.1:1/x"]
    assert m.getEPR() == "urn:uuid:5678"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parsers_never_raise_on_noise(data: bytes) -> None:
    assert wsd.parse_probe(data) is None or isinstance(wsd.parse_probe(data), str)
    assert isinstance(wsd.parse_probe_matches(data), list)


def test_unicast_discover_finds_a_simulated_camera(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = video_config()
        assert cfg.video
        sims = CameraSimHall(tmp_path.parent / "sim-cameras", list(cfg.video.cameras))
        await sims.start()
        try:
            cam = sims.onvif["cam-w1"]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edge.cli", "cameras", "discover", "--host", "127.0.0.1",
                "--port", str(cam.discovery_port), "--timeout", "2",
                stdout=asyncio.subprocess.PIPE, cwd=ROOT)
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            line = out.decode().strip().splitlines()[0]
            source, xaddrs, address = line.split("\t")
            assert source == "127.0.0.1" and xaddrs == cam.device_url
            assert address == cam.endpoint_ref
            # Nobody there: a clear "nothing found" and exit 1.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edge.cli", "cameras", "discover", "--host", "127.0.0.1",
                "--port", str(cam.port), "--timeout", "0.5",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
            out, err = await proc.communicate()
            assert proc.returncode == 1 and b"no ONVIF camera" in err
        finally:
            await sims.stop()

    asyncio.run(main())


def _netns_works() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    r = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"],
                       capture_output=True, timeout=10)
    return r.returncode == 0


@pytest.mark.skipif(not _netns_works(), reason="this container allows no network namespace")
def test_multicast_discover_inside_a_network_namespace() -> None:
    """The multicast probe leaves nothing but the namespace's own loopback."""
    script = ("ip link set lo up && ip link set lo multicast on && "
              "ip route add 224.0.0.0/4 dev lo && "
              f"{sys.executable} -m tests.video_netns_multicast")
    r = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True,
                       timeout=30, cwd=ROOT)
    out = r.stdout.decode()
    assert "http://127.0.0.1:8899/onvif/device_service" in out, (out, r.stderr.decode())
    assert "rc=0" in out
