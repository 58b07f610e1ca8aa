"""`hallbox doctor` on real boxes: healthy exits 0; each problem gets a FAIL line with its fix."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge.doctor import Context, Report, run_area
from tests.link_fixtures import Broker, broker, pki  # noqa: F401 - fixtures
from tests.ops_fixtures import BoxProcess, free_port, hall_config_text


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "doctor", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


def _mqtt(broker: Broker, password: str) -> str:  # noqa: F811
    return f"""
[mqtt]
url = "mqtt://box-1:{password}@127.0.0.1:{broker.port}"
reconnect_min_s = 0.1
reconnect_max_s = 0.3
status_interval_s = 0.5
"""


def _site(text: str) -> str:
    return text.replace('site = "gz-tianhe"', 'site = "t"').replace('box = "box-01"',
                                                                     'box = "box-1"')


def _by_name(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in report["checks"]:
        out.setdefault(c["name"], []).append(c)
    return out


def test_healthy_box(tmp_path: Path, broker: Broker) -> None:  # noqa: F811
    master, slave = os.openpty()  # a printer's serial port that exists
    tokens = {"kiosk": secrets.token_urlsafe(16), "manager": secrets.token_urlsafe(16),
              "central": secrets.token_urlsafe(16)}
    extra = _mqtt(broker, "pw-box-1") + f"""
[[devices.printers]]
id = "printer-kiosk-1"
port = "{os.ttyname(slave)}"
kiosk = "kiosk-1"
"""
    cfg = tmp_path / "hall.toml"
    cfg.write_text(_site(hall_config_text(tokens=tokens, extra=extra)), encoding="utf-8")
    data = tmp_path / "data"
    box = BoxProcess(cfg, data, devices=True).start()
    try:
        b = subprocess.run([sys.executable, "-m", "edge.cli", "backup", f"{data}/backups/",
                            "--data", str(data)], capture_output=True, text=True, check=False)
        assert b.returncode == 0, b.stderr
        args = ["--config", str(cfg), "--data", str(data), "--url", box.url]
        r = doctor(*args, "--json", env={"HALLBOX_TOKEN": tokens["manager"]})
        for _ in range(50):  # the link and the printer report within a few seconds of start
            checks = _by_name(json.loads(r.stdout))
            if checks.get("devices", [{}])[0].get("status") == "ok" and \
                    checks["broker"][0]["status"] == "ok":
                break
            r = doctor(*args, "--json", env={"HALLBOX_TOKEN": tokens["manager"]})
        report = json.loads(r.stdout)
        assert r.returncode == 0 and report["healthy"], r.stdout
        checks = _by_name(report)
        for name in ("config", "schema", "database", "box", "devices", "broker", "backups",
                     "disk: data"):
            assert checks[name][0]["status"] == "ok", (name, checks[name])
        assert "1 of 1" in checks["devices"][0]["detail"]
        assert "clock" in checks  # ok, or warn where the container cannot tell
        # The screen for people: one line per check, exit 0.
        text = doctor(*args, env={"HALLBOX_TOKEN": tokens["manager"]})
        assert text.returncode == 0 and "healthy: 0 problem(s)" in text.stdout
    finally:
        box.stop()
        os.close(master)
        os.close(slave)


def test_problems_each_with_a_fix(tmp_path: Path, broker: Broker) -> None:  # noqa: F811
    extra = _mqtt(broker, "wrong-password") + f"""
[[devices.printers]]
id = "printer-desk"
port = "tcp://127.0.0.1:{free_port()}"
"""
    cfg = tmp_path / "hall.toml"
    cfg.write_text(_site(hall_config_text(extra=extra)), encoding="utf-8")  # demo tokens
    data = tmp_path / "data"
    box = BoxProcess(cfg, data, devices=True).start()
    try:
        args = ["--config", str(cfg), "--data", str(data), "--url", box.url]
        for _ in range(50):
            r = doctor(*args, "--json")  # no token: device health from the journal
            checks = _by_name(json.loads(r.stdout))
            if checks["broker"][0]["status"] == "fail":
                break
        assert r.returncode == 1
        fails = {c["name"]: c for c in json.loads(r.stdout)["checks"] if c["status"] == "fail"}
        assert set(fails) >= {"credentials", "printer: printer-desk", "broker"}, fails
        assert "link is down" in fails["broker"]["detail"]
        assert all(c["fix"] for c in fails.values())
        assert "wrong-password" not in r.stdout
        text = doctor(*args)
        assert text.returncode == 1 and "FAIL  printer: printer-desk" in text.stdout
        assert "-> check the device is powered" in text.stdout
    finally:
        box.stop()
    r = doctor("--config", str(cfg), "--data", str(data), "--url", box.url)
    assert r.returncode == 1 and "FAIL  box" in r.stdout
    assert "systemctl status hallbox" in r.stdout


def test_broken_config(tmp_path: Path) -> None:
    cfg = tmp_path / "hall.toml"
    cfg.write_text(hall_config_text().replace("port = 8080", 'port = "eighty"'),
                   encoding="utf-8")
    r = doctor("--config", str(cfg), "--data", str(tmp_path / "data"), "--json")
    assert r.returncode == 1
    checks = _by_name(json.loads(r.stdout))
    assert checks["config"][0]["status"] == "fail"
    assert "api.port" in checks["config"][0]["detail"]
    assert "hallbox check-config" in checks["config"][0]["fix"]


def test_area_checks_are_pluggable(tmp_path: Path) -> None:
    rep = Report()
    ctx = Context(tmp_path / "hall.toml", tmp_path)
    run_area("cameras", "tests.ops_fixtures", ctx, rep)
    assert [c.name for c in rep.checks] == ["probe: area"]
    run_area("cameras", "edge.no_such_feature", ctx, rep)
    assert rep.checks[-1].status == "fail" and "cannot check" in rep.checks[-1].detail


def test_schema_newer_than_this_hallbox(tmp_path: Path) -> None:
    import sqlite3

    from edge.migrations import LATEST

    cfg = tmp_path / "hall.toml"
    cfg.write_text(hall_config_text(), encoding="utf-8")
    data = tmp_path / "data"
    box = BoxProcess(cfg, data).start()  # writes a database at the current schema
    box.stop()
    r = doctor("--config", str(cfg), "--data", str(data), "--json")
    assert _by_name(json.loads(r.stdout))["schema"][0]["detail"] == f"schema version {LATEST}"
    with sqlite3.connect(data / "hallbox.db") as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    r = doctor("--config", str(cfg), "--data", str(data), "--json")
    schema = _by_name(json.loads(r.stdout))["schema"][0]
    assert r.returncode == 1 and schema["status"] == "fail" and "newer" in schema["detail"]
    assert "no downgrades" in schema["fix"]
