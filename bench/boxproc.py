"""A real `hallbox run` in a subprocess on loopback, for the benches that need one."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit towards `want` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def cpu_s(pid: int) -> float:
    """CPU time of a process (its threads, not its children), seconds: the scheduler's
    nanosecond count per thread (/proc/<pid>/task/*/schedstat), not utime + stime, which come
    in 10 ms ticks: one camera's recorder runs a few ms a second, and a tick or two either way
    was a tenth of the figure. Falls back to the ticks where schedstat is missing."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that ended meanwhile
        if tasks:
            return total / 1e9
    except OSError:
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class BoxProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def serving(args: list[str], url: str, log: Path, what: str, *,
            env: dict[str, str] | None = None, ready_timeout_s: float = READY_TIMEOUT_S,
            stop_timeout_s: float = 15) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (its output in `log`); yields once `url`/healthz answers 200, then
    terminates it (killed if it does not stop in time)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + ready_timeout_s
        with httpx.Client(base_url=url, timeout=2, trust_env=False) as c:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{what} exited with {proc.returncode}: "
                                       + log.read_text(errors="replace")[-2000:])
                with contextlib.suppress(httpx.TransportError):
                    if c.get("/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not become ready")
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def hallbox_run(config: Path, data: Path, *, sim: bool = False, devices: bool = True,
                env: dict[str, str] | None = None) -> Iterator[BoxProcess]:
    """`hallbox run` on a free loopback port; yields once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data.mkdir(parents=True, exist_ok=True)
    log = data.parent / f"{data.name}-server.log"
    args = [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--data",
            str(data), "--ignore-hours", "--host", "127.0.0.1", "--port", str(port)]
    if sim:
        args.append("--sim")
    if not devices:
        args.append("--no-devices")
    with serving(args, url, log, "hallbox", env={"HALLBOX_LOG": "WARNING", **(env or {})}
                 ) as proc:
        yield BoxProcess(url, proc, log)
