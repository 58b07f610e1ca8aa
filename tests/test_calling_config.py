"""The [devices] config: clear errors with key paths; the example hall is valid."""

from __future__ import annotations

import tomllib

import pytest

from drivers.sim.harness import EXAMPLE
from edge.config import ConfigError, parse_config


def _raw() -> dict:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def _errors(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    return [str(i) for i in e.value.issues]


def test_example_devices_parse() -> None:
    cfg = parse_config(_raw())
    assert cfg.devices is not None
    assert len(cfg.devices.boards) == 15 and len(cfg.devices.keypads) == 14
    assert {b.protocol for b in cfg.devices.boards} == {"bx5", "at"}


def test_absent_devices_section_means_no_devices() -> None:
    raw = _raw()
    raw.pop("devices")
    assert parse_config(raw).devices is None


def test_reference_errors_carry_key_paths() -> None:
    raw = _raw()
    d = raw["devices"]
    d["boards"][1]["bus"] = "nope"
    d["boards"][2]["address"] = d["boards"][3]["address"]
    d["keypads"][0]["window"] = 99
    d["keypads"][1]["window"] = d["keypads"][2]["window"]
    d["voice"]["zones"][1]["windows"].append(1)
    errs = _errors(raw)
    assert "devices.boards[1].bus: unknown bus 'nope'" in errs
    assert any(e.startswith("devices.boards[3].address: address") for e in errs)
    assert "devices.keypads[0].window: unknown window 99" in errs
    assert any(e.startswith("devices.keypads[2].window: window") for e in errs)
    assert any(e.startswith("devices.voice.zones[1].windows[7]") for e in errs)


def test_field_errors() -> None:
    raw = _raw()
    d = raw["devices"]
    d["printers"][0]["port"] = "COM3"
    d["boards"][0]["protocol"] = "modbus"
    d["boards"][1]["main"] = True  # window board and main board at once
    d["keypads"][0]["adress"] = 3  # typo: refused, not ignored
    errs = _errors(raw)
    assert any(e.startswith("devices.printers[0].port") for e in errs), errs
    assert any(e.startswith("devices.boards[0].protocol") for e in errs), errs
    assert any(e.startswith("devices.boards[1]") and "either" in e for e in errs), errs
    assert any(e.startswith("devices.keypads[0].adress") for e in errs), errs
