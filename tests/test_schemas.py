"""Every event the box emits matches the envelope schema and its type's schema, and every
schema is documented in mqtt_topics.md."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest

from edge.domain.model import Priority
from edge.health import DeviceHealth
from edge.runtime import HallRuntime
from edge.schemas import envelope_schema, event_schemas

ROOT = Path(__file__).resolve().parents[1]
CORE_TYPES = {
    "day.opened", "ticket.issued", "appointment.booked", "appointment.checked_in",
    "staff.logged_in", "staff.logged_out", "window.paused", "window.resumed", "ticket.called",
    "ticket.recalled", "ticket.no_show", "ticket.reactivated", "ticket.started",
    "ticket.finished", "ticket.transferred", "ticket.cancelled", "device.health",
}


def validate_journal(rt: HallRuntime) -> set[str]:
    fmt = jsonschema.Draft202012Validator.FORMAT_CHECKER
    schemas = event_schemas()
    seen = set()
    for env in rt.store.events_after(0, 100_000):
        jsonschema.validate(env, envelope_schema(), format_checker=fmt)
        assert env["type"] in schemas, f"no schema for {env['type']}"
        jsonschema.validate(env["data"], schemas[env["type"]], format_checker=fmt)
        seen.add(env["type"])
    return seen


def test_every_core_event_matches_its_schema(runtime: HallRuntime) -> None:
    rt = runtime
    clock = rt.clock
    rt.execute(lambda h: (None, h.login("S001", 1)))
    for _ in range(4):
        rt.execute(lambda h: h.issue("SHMS"))
    rt.execute(lambda h: h.issue("SHMS", Priority.GREEN))
    slot = clock.now() + timedelta(minutes=5)
    rt.execute(lambda h: (None, h.book("APP-0001", "SHMS", slot, slot + timedelta(minutes=30))))
    rt.execute(lambda h: h.check_in("APP-0001"))
    rt.execute(lambda h: h.call_next(1))
    rt.execute(lambda h: (None, h.recall(1)))
    rt.execute(lambda h: (None, h.no_show(1)))
    t = next(t for t in rt.hall.tickets.values() if t.state == "no_show")
    rt.execute(lambda h: (None, h.reactivate(t.id, 1)))
    rt.execute(lambda h: h.call_next(1))
    rt.execute(lambda h: (None, h.start(1)))
    clock.advance(300)  # type: ignore[attr-defined]
    rt.execute(lambda h: (None, h.finish(1)))
    rt.execute(lambda h: h.call(1, "A004", "老人"))
    rt.execute(lambda h: h.transfer(1, "ZCDJ"))
    rt.execute(lambda h: (None, h.pause(1, "午休")))
    rt.execute(lambda h: (None, h.resume(1)))
    rt.execute(lambda h: (None, h.cancel("A003", "applicant left")))
    rt.execute(lambda h: (None, h.logout(1)))
    rt.health.report(DeviceHealth("printer-1", "printer", False, "B", "paper end"))
    rt.health.report(DeviceHealth("printer-1", "printer", True, None, "", {"printed": 3}))
    clock.advance(hours=24)  # type: ignore[attr-defined]
    rt.tick()
    seen = validate_journal(rt)
    assert CORE_TYPES <= seen, CORE_TYPES - seen


def test_schemas_are_documented() -> None:
    doc = (ROOT / "mqtt_topics.md").read_text(encoding="utf-8")
    for name in event_schemas():
        assert f"`{name}`" in doc and f"edge/schemas/events/{name}.json" in doc, name
    for name in CORE_TYPES:
        assert name in event_schemas()


@pytest.mark.parametrize("name", sorted(event_schemas()))
def test_schemas_are_valid_and_strict(name: str) -> None:
    schema = event_schemas()[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("additionalProperties") is False, "payloads must not grow silently"
