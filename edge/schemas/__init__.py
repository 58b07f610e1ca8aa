"""JSON Schemas of the MQTT contract: the envelope and each event type's `data`."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

HERE = Path(str(resources.files(__name__)))


@cache
def envelope_schema() -> dict[str, Any]:
    return json.loads((HERE / "envelope.json").read_text(encoding="utf-8"))


@cache
def event_schemas() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((HERE / "events").glob("*.json"))}
