"""The soak's moving parts, each a real process it can kill: the broker in a network namespace
the soak creates (the link can be cut there), the central ingest on a fresh PostgreSQL
database, the box supervised as systemd would, and the cameras' RTSP servers.

The broker's namespace is joined to this one by two veth pairs: the hall link (box ↔ broker)
and the central link (ingest and the soak's own command client ↔ broker). Cutting the link is
setting the hall side's veth down: the box's packets then go nowhere, as with a pulled cable
or a dead uplink; the central side stays up, so the centre keeps what it has. Addresses are a
random 10.x.y.0/29 that no interface here uses, inside that pair only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.boxproc import free_port

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = "/usr/sbin/mosquitto"
PG_BASE = os.environ.get("HALLBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def _free_subnet() -> ipaddress.IPv4Network:
    used = sh("ip", "-4", "-o", "addr").stdout + sh("ip", "-4", "route").stdout
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
                                   f".{8 * secrets.randbelow(32)}/29")
        if str(net.network_address).rsplit(".", 1)[0] + "." not in used:
            return net
    raise RuntimeError("no free 10.x.y.0/29 for the soak's network namespace")


@dataclass
class NetnsBroker:
    """Mosquitto inside a network namespace of the soak's own, reachable over two veth pairs."""

    dir: Path
    port: int = 1884
    name: str = field(default_factory=lambda: f"hbsoak-{secrets.token_hex(3)}")
    proc: subprocess.Popen[bytes] | None = None
    hall_if: str = ""
    hall_ip: str = ""  # the broker's address on the hall link
    central_ip: str = ""  # the broker's address on the central link
    cut: bool = False
    starts: int = 0

    def create(self) -> None:
        net = _free_subnet()
        a = [str(h) for h in net.hosts()]  # .1-.2 the hall pair's /30, .5-.6 the central pair's
        tag = self.name.split("-")[1]
        self.hall_if, central_if = f"hbh{tag}", f"hbc{tag}"
        sh("ip", "netns", "add", self.name)
        for root_if, ns_if, root_ip, ns_ip in ((self.hall_if, f"hbhn{tag}", a[0], a[1]),
                                               (central_if, f"hbcn{tag}", a[4], a[5])):
            sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", self.name)
            sh("ip", "addr", "add", f"{root_ip}/30", "dev", root_if)
            sh("ip", "link", "set", root_if, "up")
            sh("ip", "netns", "exec", self.name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            sh("ip", "netns", "exec", self.name, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        self.hall_ip, self.central_ip = a[1], a[5]
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "mosquitto.conf").write_text(f"""\
per_listener_settings false
user root
allow_anonymous true
persistence true
persistence_location {self.dir / 'data'}/
autosave_interval 1
max_queued_messages 1000000
max_inflight_messages 100
log_dest file {self.dir / 'mosquitto.log'}
log_type error
log_type warning
listener {self.port} {self.hall_ip}
listener {self.port} {self.central_ip}
""")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            r = sh("ip", "netns", "exec", self.name, "ss", "-ltnH", check=False)
            if f"{self.central_ip}:{self.port}" in r.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.proc = None

    def cut_link(self) -> None:
        sh("ip", "link", "set", self.hall_if, "down")
        self.cut = True

    def mend_link(self) -> None:
        sh("ip", "link", "set", self.hall_if, "up")
        self.cut = False

    def destroy(self) -> None:
        self.stop()
        sh("ip", "netns", "del", self.name, check=False)  # takes the veth pairs with it

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def hall_url(self) -> str:
        return f"mqtt://{self.hall_ip}:{self.port}"

    def central_url(self) -> str:
        return f"mqtt://{self.central_ip}:{self.port}"


class CentralDb:
    """A fresh PostgreSQL database for this run; dropped at the end unless kept."""

    def __init__(self) -> None:
        self.name = f"hallbox_soak_{secrets.token_hex(4)}"
        self.dsn = f"{PG_BASE}/{self.name}"

    def create(self) -> None:
        import psycopg

        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Ingest:
    """`hallbox central ingest` as its own process."""

    def __init__(self, dir: Path, url: str, dsn: str, key: str) -> None:
        self.args = [sys.executable, "-m", "edge.cli", "central", "ingest", "--url", url,
                     "--db", dsn, "--key", key, "--client-id", "soak-ingest",
                     "--gap-interval", "1", "--replay-backoff", "3"]
        self.log = dir / "ingest.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "HALLBOX_LOG": "INFO"})

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Life:
    """One run of the box process: when it started, answered, ended and how."""

    started: float
    ready: float | None = None
    ended: float | None = None
    how: str = ""  # "killed" (by the injector), "stopped" (at the end) or "crashed rc=N"


class SupervisedBox:
    """`hallbox run` restarted as systemd's Restart=always with RestartSec would: a killed or
    crashed box comes back after `restart_delay_s`. SIGKILL goes to its whole process group
    (the recorders' ffmpeg too), as systemd kills a unit's cgroup."""

    def __init__(self, config: Path, data: Path, log: Path, restart_delay_s: float = 1.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config, self.data, self.log = config, data, log
        self.restart_delay_s = restart_delay_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[Life] = []
        self.peak_rss_kib = 0
        self.cpu_s = 0.0  # summed over every life
        self._cpu_last = 0.0
        self.peak_cpu_pct = 0.0
        self._sample: tuple[float, float] | None = None
        self.wanted = True

    def spawn(self) -> None:
        args = [sys.executable, "-m", "edge.cli", "run", "--config", str(self.config), "--data",
                str(self.data), "--ignore-hours", "--host", "127.0.0.1", "--port",
                str(self.port)]
        with self.log.open("ab") as out:
            out.write(f"---- start {time.time():.3f}\n".encode())
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         env={**os.environ, "HALLBOX_LOG": "WARNING"})
        self.lives.append(Life(time.time()))
        self._cpu_last = 0.0
        self._sample = None

    def healthy(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/healthz", timeout=2, trust_env=False).status_code == 200
        return False

    def wait_ready(self, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.healthy():
                if self.lives[-1].ready is None:
                    self.lives[-1].ready = time.time()
                return True
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        """SIGKILL to the unit (the process group); the supervisor restarts it."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        self.lives[-1].how = "killed"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        self.lives[-1].ended = time.time()

    def stop(self) -> None:
        self.wanted = False
        p = self.proc
        if p is None or p.poll() is not None:
            return
        self.lives[-1].how = "stopped"
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        self.lives[-1].ended = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # stray children of a stopped unit

    def exited_unasked(self) -> int | None:
        """The return code if the box died without being killed or stopped."""
        p = self.proc
        if p is None or p.poll() is None or self.lives[-1].how:
            return None
        self.lives[-1].how = f"crashed rc={p.returncode}"
        self.lives[-1].ended = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        return p.returncode

    def sample(self) -> None:
        """Peak RSS (VmHWM) and CPU of the box's process."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            with open(f"/proc/{p.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
            with open(f"/proc/{p.pid}/stat", encoding="ascii") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            cpu = (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return
        self.cpu_s += max(0.0, cpu - self._cpu_last)
        self._cpu_last = cpu
        now = time.monotonic()
        if self._sample is not None and now - self._sample[0] >= 4.5:
            pct = 100 * (cpu - self._sample[1]) / (now - self._sample[0])
            self.peak_cpu_pct = max(self.peak_cpu_pct, pct)
            self._sample = (now, cpu)
        elif self._sample is None:
            self._sample = (now, cpu)

    def down_spans(self) -> list[tuple[float, float]]:
        """(from, to) wall times the box was not serving: each death to the next answer."""
        out = []
        for prev, nxt in zip(self.lives, self.lives[1:], strict=False):
            out.append((prev.ended or nxt.started, nxt.ready or nxt.started))
        return out

