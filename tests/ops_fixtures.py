"""Helpers for the tests of running in a hall: a box in its own process, a real sd_notify
socket, configs with secrets of their own."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "hall.example.toml"
DEMO_TOKENS = {"demo-kiosk-token": "kiosk", "demo-manager-token": "manager",
               "demo-central-token": "central"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hall_config_text(*, tokens: dict[str, str] | None = None, extra: str = "",
                     pin_hash: str | None = None) -> str:
    """The example hall without its devices; own tokens (role -> token) and extra sections."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text[:text.index("# ---- hall devices")]
    for demo, role in DEMO_TOKENS.items():
        if tokens and role in tokens:
            text = text.replace(sha(demo), sha(tokens[role]))
    if pin_hash is not None:
        # Every staff member gets this PIN hash.
        lines = [f'pin_hash = "{pin_hash}"' if ln.startswith("pin_hash = ") else ln
                 for ln in text.splitlines()]
        text = "\n".join(lines) + "\n"
    return text + extra


class NotifySocket:
    """A real AF_UNIX datagram socket where a process run with $NOTIFY_SOCKET reports."""

    def __init__(self) -> None:
        # Short path: sun_path holds 108 bytes, pytest's tmp paths can be longer.
        self.dir = Path(tempfile.mkdtemp(prefix="hbn-", dir="/tmp"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []

    def recv(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            msg = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append(msg)
        return msg

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg is not None and text in msg:
                return msg
        raise AssertionError(f"no {text!r} on the notify socket; got {self.messages[-10:]}")

    def drain(self) -> list[str]:
        out = []
        while (m := self.recv(0.001)) is not None:
            out.append(m)
        return out

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.dir.rmdir()


@dataclass
class BoxProcess:
    """`hallbox run --no-devices` in its own process; stderr (the log) goes to a file."""

    config: Path
    data: Path
    exe: list[str] = field(default_factory=lambda: [sys.executable, "-m", "edge.cli"])
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    devices: bool = False  # False: --no-devices (queue, API, link only)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> BoxProcess:
        self.log_path = self.data.parent / f"box-{self.port}.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.exe, "run", "--config", str(self.config), "--data", str(self.data),
                 "--port", str(self.port), "--ignore-hours",
                 *([] if self.devices else ["--no-devices"])],
                cwd=self.cwd or self.data.parent, env=env, stdout=log, stderr=log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"box exited: {self.log()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"box did not start: {self.log()}"
            time.sleep(0.1)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def doctor_checks(ctx: object) -> list[object]:
    """An area check module as `hallbox doctor` loads one (tests/test_doctor.py uses this file)."""
    from edge.doctor import Check

    return [Check("probe: area", "warn", f"looked at {getattr(ctx, 'config_path', '?')}",
                  "nothing to do")]
