"""`hallbox run` as `make run` starts it: relative data directory, simulated devices."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import EXAMPLE_CONFIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sim_hall_with_relative_data_dir(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(EXAMPLE_CONFIG), "--sim",
         "--ignore-hours", "--port", str(port), "--data", "var"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "hallbox did not start"
                time.sleep(0.2)
        sim = json.loads((tmp_path / "var" / "sim.json").read_text(encoding="utf-8"))
        classes = {d["class"] for d in sim["devices"]}
        assert {"printer", "board", "keypad", "evaluator", "attendance", "fingerprint",
                "camera"} <= classes
        for d in sim["devices"]:
            ep = d["endpoint"]
            # absolute pty paths or loopback (cameras: RTSP and ONVIF on loopback)
            assert ep.startswith(("/", "127.0.0.1:", "rtsp://127.0.0.1:")), d
            if d["class"] == "camera":
                assert d["onvif"].startswith("http://127.0.0.1:") and d["window"], d
        ticket = httpx.post(f"{base}/api/v1/tickets", json={"service": "SHMS"}, timeout=10).json()
        assert ticket["printer"]["printed"] is True
        # every simulated device comes up healthy
        deadline = time.monotonic() + 20
        while True:
            health = httpx.get(f"{base}/api/v1/health", timeout=5,
                               headers={"authorization": "Bearer demo-manager-token"}).json()
            bad = [d for d in health["devices"] if not d["online"] or d["grade"]]
            if not bad and health["devices"]:
                break
            assert time.monotonic() < deadline, bad
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode == 0
