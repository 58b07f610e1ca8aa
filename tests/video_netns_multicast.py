"""Run inside a network namespace a test created (`unshare -rn`): a camera answering multicast
WS-Discovery probes on 239.255.255.250:3702, and `hallbox cameras discover` without --host.
Prints the discover command's output. Nothing here is run outside such a namespace."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

from edge.recorder.discovery import MULTICAST, ProbeResponder


async def main() -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", MULTICAST[1]))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("4s4s", socket.inet_aton(MULTICAST[0]),
                                socket.inet_aton("127.0.0.1")))
    transport, responder = await loop.create_datagram_endpoint(
        lambda: ProbeResponder("urn:uuid:00000000-0000-4000-8000-00000000cafe",
                               ["http://127.0.0.1:8899/onvif/device_service"], []), sock=sock)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "cameras", "discover", "--json", "--timeout", "2",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    transport.close()
    sys.stdout.write(out.decode())
    print(f"probes={responder.probes} rc={proc.returncode}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
