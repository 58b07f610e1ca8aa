"""[mqtt] config, HALLBOX_MQTT_URL, the outbox quota alarm, event schemas, health topics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from edge.central.client import CentralBroker, connect_blocking, make_client
from edge.config import ConfigError, load_config, parse_config
from edge.config.mqtt import parse_mqtt_url
from edge.domain.model import DomainEvent
from edge.link.sender import Link
from edge.runtime import HallRuntime
from tests.link_fixtures import (
    SITE,
    Broker,
    await_for,
    box_config,
    box_password,
    broker,
    link_health,
    pki,
)

__all__ = ["broker", "pki"]
ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "edge" / "schemas"


EXAMPLES = ("hall.example.toml", "mqtt.example.toml")


def example_text() -> str:
    """The example hall with config/mqtt.example.toml appended, as a hall enables its link."""
    return "\n".join((ROOT / "config" / n).read_text(encoding="utf-8") for n in EXAMPLES)


def raw_example() -> dict:
    import tomllib

    return tomllib.loads(example_text())


def test_example_config_has_a_valid_mqtt_section(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path):
    monkeypatch.delenv("HALLBOX_MQTT_URL", raising=False)
    assert load_config(ROOT / "config" / "hall.example.toml").mqtt is None  # make run: no link
    both = tmp_path / "hall.toml"
    both.write_text(example_text(), encoding="utf-8")
    cfg = load_config(both)
    assert cfg.mqtt is not None and cfg.mqtt.command_key


def test_no_section_no_link(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HALLBOX_MQTT_URL", raising=False)
    raw = raw_example()
    raw.pop("mqtt", None)
    assert parse_config(raw).mqtt is None


def test_env_url_overrides(monkeypatch: pytest.MonkeyPatch):
    raw = raw_example()
    monkeypatch.setenv("HALLBOX_MQTT_URL", "mqtts://u%40x:p%3Aw@broker.example:9999")
    cfg = parse_config(raw)
    a = cfg.mqtt.broker()
    assert (a.tls, a.host, a.port, a.username, a.password) == (
        True, "broker.example", 9999, "u@x", "p:w")
    raw.pop("mqtt", None)
    assert parse_config(raw).mqtt is not None  # the variable alone turns the link on


@pytest.mark.parametrize("patch,path,needle", [
    ({"url": "http://x"}, "mqtt.url", "mqtt:// or mqtts://"),
    ({"url": "mqtt://"}, "mqtt.url", "no host"),
    ({"inflight": 0}, "mqtt.inflight", "greater than or equal to 1"),
    ({"command_key": "short"}, "mqtt.command_key", "at least 16"),
    ({"key_file": None}, "mqtt", "go together"),
    ({"colour": "red"}, "mqtt.colour", "Extra inputs"),
])
def test_bad_mqtt_config_names_the_key(monkeypatch, patch, path, needle):
    monkeypatch.delenv("HALLBOX_MQTT_URL", raising=False)
    raw = raw_example()
    raw["mqtt"] = {**raw["mqtt"], "cert_file": "/c.pem", "key_file": "/c.key", **patch}
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    issues = [(i.path, i.message) for i in e.value.issues]
    assert any(p == path and needle in m for p, m in issues), issues


def test_url_parser_defaults():
    assert parse_mqtt_url("mqtt://h").port == 1883
    assert parse_mqtt_url("mqtts://h").port == 8883


def test_quota_alarm_and_nothing_dropped(tmp_path: Path):
    cfg = box_config("box-1", "mqtt://127.0.0.1:1", outbox_quota_mb=1, quota_alarm_percent=50)
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    text = "x" * 180

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        link.health_interval_s = 0.1
        await link.start()
        for b in range(20):
            rt.emit([DomainEvent("display.message", {"command_id": f"q{b}-{i}", "text": text,
                                                     "seconds": 60, "target": "main"})
                     for i in range(100)])
        await await_for(lambda: getattr(link_health(rt), "grade", None) == "A", 10,
                        "grade-A alarm near the quota")
        await link.stop()

    asyncio.run(main())
    rt.store.flush()  # health events are queued, not waited for
    h = rt.health.current["mqtt-link"]
    assert "quota" in h.detail and h.metrics["unsent_bytes"] >= 512 * 1024
    assert rt.store.outbox_pending() == rt.store.head_seq  # nothing dropped
    alarms = rt.store.events_after(0, 100000, ["device.health"])
    assert any(e["data"]["grade"] == "A" for e in alarms)  # journalled, so it reaches the centre
    rt.close()


def _validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_health_and_status_topics_match_their_schemas(tmp_path: Path, broker: Broker):
    cfg = box_config("box-2", broker.url("box-2", box_password("box-2")))
    rt = HallRuntime.open(cfg, tmp_path / "box", ignore_hours=True)
    got: dict[str, list[dict]] = {}
    cb = CentralBroker(broker.central_url())
    c = make_client(cb, "watch-health")
    c.on_message = lambda _c, _u, m: got.setdefault(m.topic, []).append(json.loads(m.payload))
    connect_blocking(c, cb)
    c.subscribe(f"hallbox/v1/{SITE}/box-2/#", qos=1)
    from edge.health import DeviceHealth

    async def main() -> None:
        link = Link(rt, cfg.mqtt)
        await link.start()
        await await_for(lambda: link.connected, 10, "connected")
        rt.health.report(DeviceHealth("printer-kiosk-1", "printer", False, "B", "paper out"))
        await await_for(lambda: f"hallbox/v1/{SITE}/box-2/health/printer-kiosk-1" in got, 10,
                        "health published")
        await await_for(lambda: rt.store.outbox_pending() == 0, 10, "drained")
        await link.stop()

    asyncio.run(main())
    c.disconnect()
    c.loop_stop()
    status, health, event = (_validator(SCHEMAS / "mqtt" / f) for f in
                             ("status.json", "health.json", "event.json"))
    seen_kinds = set()
    for topic, msgs in got.items():
        kind = topic.split("/")[4]
        seen_kinds.add(kind)
        for m in msgs:
            {"status": status, "health": health, "events": event}[kind].validate(m)
            if kind == "events":
                s = SCHEMAS / "events" / f"{m['type']}.json"
                if s.exists():
                    _validator(s).validate(m["data"])
    assert seen_kinds == {"status", "health", "events"}
    printer = got[f"hallbox/v1/{SITE}/box-2/health/printer-kiosk-1"][-1]
    assert printer["grade"] == "B" and printer["detail"] == "paper out"
    rt.close()


def test_event_schemas_are_valid_and_match_emitted_data():
    from edge.link import commands

    for p in sorted((SCHEMAS / "events").glob("*.json")) + sorted(
            (SCHEMAS / "mqtt").glob("*.json")):
        _validator(p)  # each is a valid draft 2020-12 schema
    v = _validator(SCHEMAS / "events" / "display.message.json")
    v.validate({"command_id": "c", "text": "t", "seconds": 60, "target": 3})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"command_id": "c", "text": "", "seconds": 60, "target": "main"})
    from edge.supervision_commands import COMMANDS as SUPERVISION

    every = set(commands.builtin_commands()) | {name for name, _ in SUPERVISION}
    assert every >= {"replay", "attendance.pull", "spotcheck.start", "display.message",
                     "appointments.push", "config.get", "health.get", "attendance.summary",
                     "stats.get"}
    for name in every:
        assert (SCHEMAS / "mqtt" / f"cmd.{name}.args.json").exists(), name
