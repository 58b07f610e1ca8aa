"""WS-Discovery (2005/04, the version ONVIF Core uses) for finding cameras: the codec of a Probe
for `dn:NetworkVideoTransmitter` and of its ProbeMatches, and a thin UDP transport.

A probe goes to one host (unicast, UDP 3702) or to the multicast group 239.255.255.250:3702.
The box multicasts only when `hallbox cameras discover` is run without --host; the tests run
that only inside a network namespace they create. Checked against the `wsdiscovery` package's
serializer and parser (tests/test_video_discovery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
DN = "http://www.onvif.org/ver10/network/wsdl"
PROBE = f"{WSD}/Probe"
PROBE_MATCHES = f"{WSD}/ProbeMatches"
TO_DISCOVERY = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
ANONYMOUS = f"{WSA}/role/anonymous"
MULTICAST = ("239.255.255.250", 3702)
MAX_DATAGRAM = 65507


@dataclass(frozen=True)
class Match:
    address: str  # the device's endpoint reference (urn:uuid:...)
    xaddrs: list[str]  # its device service urls
    types: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    source: str = ""  # host the answer came from


def probe_message(message_id: str | None = None) -> tuple[str, bytes]:
    """(MessageID, the Probe datagram) for ONVIF video transmitters."""
    mid = message_id or uuid.uuid4().urn
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:a="{WSA}" xmlns:d="{WSD}" xmlns:dn="{DN}">'
        f"<s:Header><a:Action>{PROBE}</a:Action><a:MessageID>{mid}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{ANONYMOUS}</a:Address></a:ReplyTo>"
        f"<a:To>{TO_DISCOVERY}</a:To></s:Header>"
        "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body>"
        "</s:Envelope>")
    return mid, xml.encode("utf-8")


def parse_probe(data: bytes) -> str | None:
    """The MessageID of a Probe that asks for video transmitters (or for anything); else None."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    if root.findtext(f"{{{SOAP}}}Header/{{{WSA}}}Action", "").strip() != PROBE:
        return None
    probe = root.find(f"{{{SOAP}}}Body/{{{WSD}}}Probe")
    if probe is None:
        return None
    types = (probe.findtext(f"{{{WSD}}}Types") or "").split()
    if types and not any(t.endswith(":NetworkVideoTransmitter") or t == "NetworkVideoTransmitter"
                         for t in types):
        return None
    return root.findtext(f"{{{SOAP}}}Header/{{{WSA}}}MessageID", "").strip() or None


def probe_matches_message(relates_to: str, address: str, xaddrs: list[str],
                          scopes: list[str]) -> bytes:
    """A ProbeMatches answer (what a camera sends back, unicast, to the prober)."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:a="{WSA}" xmlns:d="{WSD}" xmlns:dn="{DN}">'
        f"<s:Header><a:Action>{PROBE_MATCHES}</a:Action>"
        f"<a:MessageID>{uuid.uuid4().urn}</a:MessageID>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo><a:To>{ANONYMOUS}</a:To>"
        f'<d:AppSequence InstanceId="{int(time.time())}" MessageNumber="1"/></s:Header>'
        "<s:Body><d:ProbeMatches><d:ProbeMatch>"
        f"<a:EndpointReference><a:Address>{address}</a:Address></a:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter</d:Types>"
        f"<d:Scopes>{' '.join(scopes)}</d:Scopes><d:XAddrs>{' '.join(xaddrs)}</d:XAddrs>"
        "<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body>"
        "</s:Envelope>")
    return xml.encode("utf-8")


def parse_probe_matches(data: bytes, relates_to: str | None = None,
                        source: str = "") -> list[Match]:
    """The matches of a ProbeMatches datagram (answering our probe when relates_to is given)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return []
    hdr = root.find(f"{{{SOAP}}}Header")
    if hdr is None or hdr.findtext(f"{{{WSA}}}Action", "").strip() != PROBE_MATCHES:
        return []
    if relates_to and hdr.findtext(f"{{{WSA}}}RelatesTo", "").strip() != relates_to:
        return []
    out = []
    for m in root.iterfind(f"{{{SOAP}}}Body/{{{WSD}}}ProbeMatches/{{{WSD}}}ProbeMatch"):
        addr = m.findtext(f"{{{WSA}}}EndpointReference/{{{WSA}}}Address", "").strip()
        xaddrs = (m.findtext(f"{{{WSD}}}XAddrs") or "").split()
        types = (m.findtext(f"{{{WSD}}}Types") or "").split()
        scopes = (m.findtext(f"{{{WSD}}}Scopes") or "").split()
        if addr or xaddrs:
            out.append(Match(addr, xaddrs, types, scopes, source))
    return out


async def discover(host: str | None = None, port: int = 3702,
                   timeout: float = 3.0) -> list[Match]:
    """Probe one host (unicast) or the multicast group; collect answers for `timeout` s."""
    mid, msg = probe_message()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("", 0))
    if host is None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # never off the LAN
        target = MULTICAST if port == 3702 else (MULTICAST[0], port)
    else:
        target = (host, port)
    found: dict[str, Match] = {}
    try:
        for _ in range(2):  # UDP: the probe is repeated once, answers are de-duplicated
            await loop.sock_sendto(sock, msg, target)
            end = loop.time() + timeout / 2
            while (left := end - loop.time()) > 0:
                try:
                    data, src = await asyncio.wait_for(loop.sock_recvfrom(sock, MAX_DATAGRAM),
                                                       left)
                except TimeoutError:
                    break
                for m in parse_probe_matches(data, mid, src[0]):
                    found.setdefault(m.address or m.xaddrs[0], m)
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    return list(found.values())


class ProbeResponder(asyncio.DatagramProtocol):
    """Answers unicast probes (a simulated camera); it never announces itself (no Hello)."""

    def __init__(self, address: str, xaddrs: list[str], scopes: list[str]) -> None:
        self.address, self.xaddrs, self.scopes = address, xaddrs, scopes
        self.transport: asyncio.DatagramTransport | None = None
        self.probes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        mid = parse_probe(data[:MAX_DATAGRAM])
        if mid is None or self.transport is None:
            return
        self.probes += 1
        self.transport.sendto(probe_matches_message(mid, self.address, self.xaddrs,
                                                    self.scopes), addr)
