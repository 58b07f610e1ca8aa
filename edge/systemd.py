"""sd_notify without a dependency: READY, WATCHDOG, STATUS and STOPPING for Type=notify units.

The protocol: one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
or an abstract name written with a leading '@').
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one notification; False when not run by systemd or the socket is gone."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError:
        # systemd went away (or a test's socket closed): the box runs on regardless.
        return False
    return True


def watchdog_interval() -> float | None:
    """Half the unit's WatchdogSec, in seconds, when systemd asked for pings (for this pid)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000 if usec and usec.isdigit() and int(usec) > 0 else None
