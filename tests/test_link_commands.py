"""Commands from the central room: every built-in command, and every kind of refusal."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.central.client import CentralBroker, send_command
from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.link import protocol as P
from tests.link_fixtures import (
    CMD_KEY,
    SITE,
    BoxThread,
    Broker,
    box_config,
    box_password,
    broker,
    pki,
    wait_for,
)

__all__ = ["broker", "pki"]
SCHEMAS = Path(__file__).resolve().parents[1] / "edge" / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / "mqtt" / name).read_text(encoding="utf-8"))


def check(instance: Any, name: str) -> None:
    jsonschema.validate(instance, schema(name),
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture
def box(tmp_path: Path, broker: Broker):
    cfg = box_config("box-1", broker.url("box-1", box_password("box-1")))
    b = BoxThread(tmp_path / "box", cfg)
    yield b
    b.close()


def cmd(broker: Broker, name: str, args: dict[str, Any] | None = None, **kw: Any):
    reply = send_command(CentralBroker(broker.central_url()), CMD_KEY, SITE, "box-1", name,
                         args or {}, timeout=10, **kw)
    assert reply is not None, f"no reply to {name}"
    check(reply, "reply.json")
    assert reply["sig"] == P.reply_sig(CMD_KEY, reply)  # the box signed its answer
    return reply


def journal(box: BoxThread, type_: str) -> list[dict[str, Any]]:
    return box.call(lambda: box.rt.store.events_after(0, 10000, [type_]))


def test_every_builtin_command(box: BoxThread, broker: Broker):
    # punches as the attendance feature journals them: one today, one read back from the
    # terminal's memory today but made three days ago
    now = box.call(lambda: box.rt.hall.local())
    today = now.date().isoformat()
    for at, source in ((now, "live"), (now - timedelta(days=3), "stored")):
        box.call(lambda at=at, source=source: box.rt.emit([DomainEvent("punch.recorded", {
            "terminal": "fp-1", "user_id": "7", "staff": "S001", "name": None,
            "at": rfc3339(at), "kind": "check_in", "punch": 0, "verify": 1,
            "source": source})]))
    three_days_ago = (now - timedelta(days=3)).date().isoformat()

    r = cmd(broker, "health.get")
    assert r["ok"] and any(d["device"] == "mqtt-link" for d in r["result"]["devices"])
    assert r["result"]["link"]["connected"] is True

    r = cmd(broker, "config.get")
    text = json.dumps(r["result"])
    assert r["ok"] and r["result"]["config"]["hall"]["box"] == "box-1"
    assert CMD_KEY not in text and box_password("box-1") not in text
    assert "token_sha256" not in text or "<redacted>" in text
    assert all(len(w) != 64 for w in text.replace('"', " ").split() if w.isalnum())  # no hashes

    r = cmd(broker, "display.message", {"text": "下午 14:00 系统维护", "seconds": 120})
    assert r["ok"] and journal(box, "display.message")[-1]["data"]["text"] == "下午 14:00 系统维护"

    r = cmd(broker, "spotcheck.start", {"window": 1, "note": "随机抽查"})
    assert r["ok"] and journal(box, "spotcheck.started")[-1]["seq"] == r["result"]["seq"]

    start = datetime.now(UTC) + timedelta(hours=1)
    appts = {"appointments": [
        {"code": "AP1", "service": "SHMS", "slot_start": rfc3339(start),
         "slot_end": rfc3339(start + timedelta(minutes=30))},
        {"code": "AP2", "service": "NOPE", "slot_start": rfc3339(start),
         "slot_end": rfc3339(start + timedelta(minutes=30))}]}
    check(appts, "cmd.appointments.push.args.json")
    r = cmd(broker, "appointments.push", appts)
    assert r["ok"] and r["result"]["booked"] == 1
    assert [x["ok"] for x in r["result"]["results"]] == [True, False]
    assert "AP1" in box.call(lambda: box.rt.hall.appointments)

    r = cmd(broker, "attendance.pull", {"from": today, "to": today})
    assert r["ok"] and r["result"]["count"] == 1
    assert r["result"]["records"][0]["data"]["source"] == "live"
    r = cmd(broker, "attendance.pull", {"from": three_days_ago, "to": three_days_ago})
    assert r["result"]["count"] == 1 and r["result"]["records"][0]["data"]["source"] == "stored"
    r = cmd(broker, "attendance.pull", {"from": three_days_ago, "to": today, "limit": 1})
    assert r["result"]["count"] == 1 and r["result"]["truncated"] is True
    r = cmd(broker, "attendance.pull", {"from": today, "to": three_days_ago})
    assert r["ok"] is False and r["error"]["code"] == "bad-args"

    head = box.call(lambda: box.rt.store.head_seq)
    r = cmd(broker, "replay", {"from_seq": 1, "to_seq": 3})
    assert r["ok"] and r["result"] == {"from_seq": 1, "to_seq": 3, "count": 3}
    wait_for(lambda: box.call(lambda: box.link.stats["replayed"]) >= 3, 10, "replayed")
    assert head >= 3
    executed = [e["data"]["command"] for e in journal(box, "command.executed")]
    assert executed == ["health.get", "config.get", "display.message", "spotcheck.start",
                        "appointments.push", "attendance.pull", "attendance.pull",
                        "attendance.pull", "replay"]


def test_refusals_each_say_why(box: BoxThread, broker: Broker):
    b = CentralBroker(broker.central_url())
    now = datetime.now(UTC)

    def send(name: str, payload: Any, protocol: str = "5") -> dict[str, Any]:
        reply = send_command(b, CMD_KEY, SITE, "box-1", name, timeout=10, protocol=protocol,
                             payload=payload)
        assert reply is not None
        check(reply, "reply.json")
        assert reply["ok"] is False
        return reply

    expired = P.make_command(CMD_KEY, SITE, "box-1", "health.get", {}, ttl_s=10,
                             now=now - timedelta(seconds=60))
    assert send("health.get", expired)["error"]["code"] == "expired"

    stale = P.make_command(CMD_KEY, SITE, "box-1", "health.get", {}, ttl_s=7200,
                           now=now - timedelta(hours=1))
    assert send("health.get", stale)["error"]["code"] == "stale"

    future = P.make_command(CMD_KEY, SITE, "box-1", "health.get", {},
                            now=now + timedelta(hours=1))
    assert send("health.get", future)["error"]["code"] == "not-yet-valid"

    once = P.make_command(CMD_KEY, SITE, "box-1", "health.get", {})
    first = send_command(b, CMD_KEY, SITE, "box-1", "health.get", payload=once, timeout=10)
    assert first is not None and first["ok"]
    again = send("health.get", once)
    assert again["error"]["code"] == "repeated" and once["id"] in again["error"]["detail"]

    forged = P.make_command("another-key-of-16-chars", SITE, "box-1", "display.message",
                            {"text": "forged"})
    assert send("display.message", forged)["error"]["code"] == "bad-signature"
    # signed for another box, replayed here
    other = P.make_command(CMD_KEY, SITE, "box-2", "display.message", {"text": "x"})
    assert send("display.message", other)["error"]["code"] == "bad-signature"
    # altered args after signing
    altered = P.make_command(CMD_KEY, SITE, "box-1", "display.message", {"text": "ok"})
    altered["args"]["text"] = "changed"
    assert send("display.message", altered)["error"]["code"] == "bad-signature"

    unknown = P.make_command(CMD_KEY, SITE, "box-1", "reboot", {})
    r = send("reboot", unknown)
    assert r["error"]["code"] == "unknown-command" and "health.get" in r["error"]["detail"]

    assert send("health.get", b"not json {")["error"]["code"] == "malformed"
    r = send("health.get", {"id": "x1", "args": {}})
    assert r["error"]["code"] == "malformed" and "issued_at" in r["error"]["detail"]
    bad_time = dict(P.make_command(CMD_KEY, SITE, "box-1", "health.get", {}),
                    issued_at="yesterday")
    assert send("health.get", bad_time)["error"]["code"] == "malformed"

    bad_args = P.make_command(CMD_KEY, SITE, "box-1", "display.message", {"txt": "typo"})
    r = send("display.message", bad_args)
    assert r["error"]["code"] == "bad-args" and "text" in r["error"]["detail"]

    # MQTT 3.1.1 requester: the refusal comes back on reply/{request_id}
    r = send("reboot", P.make_command(CMD_KEY, SITE, "box-1", "reboot", {}), protocol="3.1.1")
    assert r["error"]["code"] == "unknown-command"

    rejected = [e["data"]["reason"] for e in journal(box, "command.rejected")]
    assert rejected.count("bad-signature") == 3
    for reason in ("expired", "stale", "not-yet-valid", "repeated", "unknown-command",
                   "malformed", "bad-args"):
        assert reason in rejected
    # nothing forged reached the hall boards
    assert journal(box, "display.message") == []


def test_box_without_key_takes_no_commands(tmp_path: Path, broker: Broker):
    cfg = box_config("box-2", broker.url("box-2", box_password("box-2")), command_key=None)
    b = BoxThread(tmp_path / "box", cfg)
    try:
        reply = send_command(CentralBroker(broker.central_url()), CMD_KEY, SITE, "box-2",
                             "health.get", {}, timeout=10)
        assert reply is not None and reply["error"]["code"] == "no-key"
    finally:
        b.close()


def test_mqtt311_box_and_cli(tmp_path: Path, broker: Broker):
    """A box forced to MQTT 3.1.1 answers on reply/{id}; `hallbox central cmd` prints it."""
    cfg = box_config("box-3", broker.url("box-3", box_password("box-3")), protocol="3.1.1")
    b = BoxThread(tmp_path / "box", cfg)
    try:
        assert b.call(lambda: b.link.conn.protocol) == "3.1.1"
        out = subprocess.run(
            [sys.executable, "-m", "edge.cli", "central", "cmd", "t/box-3", "display.message",
             "text=请注意", "seconds=30", "--url", broker.central_url(), "--key", CMD_KEY],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        assert reply["ok"] and reply["command"] == "display.message"
        out = subprocess.run(
            [sys.executable, "-m", "edge.cli", "central", "cmd", "t/box-3", "nope",
             "--url", broker.central_url(), "--key", CMD_KEY],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and json.loads(out.stdout)["error"]["code"] == "unknown-command"
    finally:
        b.close()


def test_command_payload_schema_matches_what_we_send():
    c = P.make_command(CMD_KEY, SITE, "box-1", "replay", {"from_seq": 5})
    check(c, "command.json")
    check(c["args"], "cmd.replay.args.json")
    with pytest.raises(jsonschema.ValidationError):
        check({**c, "extra": 1}, "command.json")
    with pytest.raises(jsonschema.ValidationError):
        check({"from_seq": 0}, "cmd.replay.args.json")


def test_seen_command_ids_survive_a_restart(tmp_path: Path, broker: Broker):
    cfg = box_config("box-2", broker.url("box-2", box_password("box-2")))
    b = CentralBroker(broker.central_url())
    once = P.make_command(CMD_KEY, SITE, "box-2", "display.message", {"text": "一次"})
    box = BoxThread(tmp_path / "box", cfg)
    try:
        r = send_command(b, CMD_KEY, SITE, "box-2", "display.message", payload=once, timeout=10)
        assert r is not None and r["ok"]
    finally:
        box.close()
    box = BoxThread(tmp_path / "box", cfg)
    try:
        r = send_command(b, CMD_KEY, SITE, "box-2", "display.message", payload=once, timeout=10)
        assert r is not None and r["error"]["code"] == "repeated"
        assert len(journal(box, "display.message")) == 1
    finally:
        box.close()
