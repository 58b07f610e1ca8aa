"""The box's log: structured lines, journald when systemd connected stderr, a rate limit that
keeps a failure loop from filling a disk, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from edge import logs
from edge.central.client import CentralBroker, send_command
from edge.config import parse_config
from edge.link import protocol as P
from tests.link_fixtures import Broker, broker, pki  # noqa: F401 - fixtures
from tests.ops_fixtures import BoxProcess, hall_config_text, sha


def _record(msg: str, *args: object, level: int = logging.WARNING, name: str = "edge.x",
            exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom with Bearer abcdefTOKEN123")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_one_line_key_value_and_json() -> None:
    f = logs.LineFormatter(journald=False, as_json=False)
    line = f.format(_record("printer %s offline", "printer-kiosk-1", exc=True))
    assert "\n" not in line
    assert line.startswith("ts=") and " level=warning logger=edge.x " in line
    assert 'msg="printer printer-kiosk-1 offline"' in line
    assert "boom with Bearer ***" in line and "abcdefTOKEN123" not in line
    j = logs.LineFormatter(journald=False, as_json=True).format(_record("a=%d", 1))
    assert json.loads(j)["msg"] == "a=1"
    # journald: a priority prefix, no timestamp of our own.
    jl = logs.LineFormatter(journald=True, as_json=False).format(
        _record("x", level=logging.ERROR))
    assert jl.startswith("<3>level=error ") and "ts=" not in jl


def test_journald_detected_from_journal_stream(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stream", "w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.journald_stream(f)
        with open(tmp_path / "other", "w") as g:
            assert not logs.journald_stream(g)  # stderr redirected elsewhere: not journald
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not logs.journald_stream(io.StringIO())


def test_rate_limit_holds_back_a_failure_loop_and_says_how_much() -> None:
    now = [0.0]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.LineFormatter(journald=False, as_json=False))
    handler.addFilter(logs.RateLimit(burst=3, window=60, total=50, clock=lambda: now[0]))
    log = logging.getLogger("test.ratelimit")
    log.propagate = False
    log.addHandler(handler)
    try:
        for i in range(10_000):
            log.error("link down: %s", f"attempt {i}")
        log.warning("printer recovered")  # another message still gets through
        assert len(out.getvalue().splitlines()) == 4
        now[0] = 61.0
        log.error("link down: %s", "attempt after the window")
        lines = out.getvalue().splitlines()
        assert "9997 more like this held back" in lines[4]
        assert "attempt after the window" in lines[5]
        # A storm of different messages is bounded by the total.
        now[0] = 200.0
        for i in range(5000):
            log.error(f"distinct failure {i}")
        assert len(out.getvalue().splitlines()) <= 6 + 1 + 50
    finally:
        log.removeHandler(handler)


def test_config_secrets_found_wherever_they_sit() -> None:
    import tomllib

    raw = tomllib.loads(hall_config_text())
    raw["mqtt"] = {"url": "mqtt://box:url-secret-pw@127.0.0.1:1883", "password": "field-pw-1",
                   "command_key": "k" * 20, "key_file": "/etc/hallbox/box.key",
                   "cert_file": "/etc/hallbox/box.pem"}
    found = logs.config_secrets(parse_config(raw))
    assert {"url-secret-pw", "field-pw-1", "k" * 20} <= found
    assert "/etc/hallbox/box.key" not in found  # a path, not a secret
    assert any(s.startswith("$argon2") for s in found)
    assert sha("demo-kiosk-token") in found


def test_pydantic_secret_values_are_found() -> None:
    from pydantic import BaseModel, SecretStr

    class Camera(BaseModel):
        id: str
        password: SecretStr | None = None
        rtsp: str

    found = logs.config_secrets(Camera(id="cam-w1", password=SecretStr("cam-pass-1"),
                                       rtsp="rtsp://admin:rtsp-pass-2@10.0.0.9/stream"))
    assert found == {"cam-pass-1", "rtsp-pass-2"}


def test_redaction_patterns() -> None:
    r = logs.Redactor()
    r.add(["s3cr3t-value"])
    text = r("conn mqtt://u:p4ss@h:1 Authorization: Bearer tok.en-1 pin=123456 "
             '{"password": "xyz"} $argon2id$v=19$m=1$abc$def s3cr3t-value')
    for leaked in ("p4ss", "tok.en-1", "123456", "xyz", "abc$def", "s3cr3t-value"):
        assert leaked not in text, leaked


def test_no_secret_in_any_log_line(tmp_path: Path, broker: Broker) -> None:  # noqa: F811
    tokens = {"kiosk": secrets.token_urlsafe(24), "manager": secrets.token_urlsafe(24),
              "central": secrets.token_urlsafe(24)}
    pin = "593817"
    pin_hash = PasswordHasher().hash(pin)
    mqtt_password = "pw-box-1"  # what the test broker knows for box-1
    command_key = "hmac-" + secrets.token_hex(16)
    extra = f"""
[mqtt]
url = "mqtt://box-1:{mqtt_password}@127.0.0.1:{broker.port}"
command_key = "{command_key}"
reconnect_min_s = 0.1
reconnect_max_s = 0.3
status_interval_s = 0.5
"""
    text = hall_config_text(tokens=tokens, pin_hash=pin_hash, extra=extra)
    text = text.replace('site = "gz-tianhe"', 'site = "t"').replace('box = "box-01"',
                                                                      'box = "box-1"')
    cfg = tmp_path / "hall.toml"
    cfg.write_text(text, encoding="utf-8")
    box = BoxProcess(cfg, tmp_path / "data", env={"HALLBOX_LOG": "DEBUG"}).start()
    session = ""
    try:
        h = {"Authorization": f"Bearer {tokens['kiosk']}"}
        with httpx.Client(base_url=box.url, timeout=10) as c:
            assert c.post("/api/v1/tickets", json={"service": "SHMS"}, headers=h).status_code \
                == 201
            assert c.get("/api/v1/health", headers={
                "Authorization": f"Bearer {tokens['manager']}"}).status_code == 200
            assert c.get("/api/v1/health", headers={
                "Authorization": f"Bearer {tokens['manager']}x"}).status_code == 401
            assert c.post("/api/v1/sessions", json={"staff_id": "S001", "pin": "000000",
                                                    "window": 1}).status_code == 401
            r = c.post("/api/v1/sessions", json={"staff_id": "S001", "pin": pin, "window": 1})
            assert r.status_code == 201, r.text
            session = r.json()["token"]
            s = {"Authorization": f"Bearer {session}"}
            assert c.post("/api/v1/windows/1/call-next", headers=s).status_code == 200
            assert c.post("/api/v1/windows/2/call-next", headers=s).status_code == 403
        # The link: connected, then the broker goes away and comes back (reconnect logs).
        def wait_log(text: str, count: int = 1) -> None:
            deadline = time.monotonic() + 20
            while box.log().count(text) < count:
                assert time.monotonic() < deadline, f"no {text!r} in {box.log()[-2000:]}"
                time.sleep(0.05)

        wait_log("mqtt link up")
        # Central commands signed with the HMAC key: one good, one forged (refused, logged).
        central = CentralBroker(broker.central_url())
        ok = send_command(central, command_key, "t", "box-1", "health.get", {}, timeout=10)
        assert ok is not None and ok["ok"], ok
        forged = P.make_command("another-key-of-16-chars", "t", "box-1", "display.message",
                                {"text": "forged", "seconds": 10, "target": "main"})
        bad = send_command(central, command_key, "t", "box-1", "display.message",
                           payload=forged, timeout=10)
        assert bad is not None and bad["error"]["code"] == "bad-signature"
        wait_log("refused")
        broker.stop()
        wait_log("mqtt link lost")
        broker.start()
        wait_log("mqtt link up", 2)
    finally:
        box.stop()
    # A config error that quotes a URL with its password.
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("url = \"mqtt://", "url = \"mqtx://"), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(bad), "--data",
                        str(tmp_path / "d2"), "--port", "1"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and "mqtx://box-1:***@" in r.stderr, r.stderr
    lines = box.log().splitlines() + r.stderr.splitlines()
    assert len(lines) > 5, lines  # the box did log: the grep below has something to read
    assert any("level=" in ln for ln in lines)
    needles = {"mqtt password": mqtt_password, "command key": command_key, "pin": pin,
               "pin hash": pin_hash, "pin hash tail": pin_hash.rsplit("$", 1)[1],
               "session": session, **{f"{k} token": v for k, v in tokens.items()},
               **{f"{k} token sha256": sha(v) for k, v in tokens.items()}}
    for what, secret in needles.items():
        hits = [ln for ln in lines if secret in ln]
        assert not hits, f"{what} logged: {hits[:3]}"
