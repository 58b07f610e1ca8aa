"""Config errors name their key path; `hallbox check-config` prints them all and exits 2."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, HallConfig, parse_config
from tests.conftest import EXAMPLE_CONFIG


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))


def errors_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    return [str(i) for i in e.value.issues]


def test_example_describes_a_realistic_hall(hall_config: HallConfig) -> None:
    names = {s.name for s in hall_config.services}
    assert {"社会民生", "注册登记", "经营许可", "投资建设", "公安", "人社", "税务"} <= names
    assert len(hall_config.windows) >= 12
    assert hall_config.staff and all(s.pin_hash.startswith("$argon2") for s in hall_config.staff)


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c["hall"].update(colour="red"), "hall.colour: Extra inputs are not permitted"),
    (lambda c: c["hall"].update(timezone="Mars/Base"), "hall.timezone: Value error, unknown"),
    (lambda c: c["hall"].update(hours=["8:30-12"]), "hall.hours: Value error, expected HH:MM"),
    (lambda c: c["hall"].update(days=[0, 8]), "hall.days: Value error"),
    (lambda c: c["services"][2].update(prefix="AA"), "services[2].prefix:"),
    (lambda c: c["services"][1].update(prefix="A"), "services[1].prefix: ticket prefix 'A'"),
    (lambda c: c["services"][0].update(daily_cap="many"), "services[0].daily_cap:"),
    (lambda c: c["windows"][3]["services"].append("NOPE"),
     "windows[3].services[2].service: unknown service 'NOPE'"),
    (lambda c: c["windows"][5].update(number=1), "windows[5]: duplicate window number 1"),
    (lambda c: c["staff"][0].update(pin_hash="1234"), "staff[0].pin_hash: Value error, pin_hash"),
    (lambda c: c["staff"][1].update(windows=[99]), "staff[1].windows[0]: unknown window 99"),
    (lambda c: c["queue"].update(priority_streak_cap=0), "queue.priority_streak_cap:"),
    (lambda c: c["api"]["tokens"][0].update(token_sha256="xyz"), "api.tokens[0].token_sha256:"),
    (lambda c: c.pop("services"), "services: Field required"),
])
def test_errors_carry_key_paths(mutate: Any, expected: str) -> None:
    raw = example()
    mutate(raw)
    errs = errors_of(raw)
    assert any(e.startswith(expected) for e in errs), errs


def test_every_error_is_reported_at_once() -> None:
    raw = example()
    raw["hall"]["colour"] = "red"
    raw["services"][0]["daily_cap"] = -1
    raw["windows"][0]["services"] = ["NOPE"]
    errs = errors_of(raw)
    assert any(e.startswith("hall.colour") for e in errs)
    assert any(e.startswith("services[0].daily_cap") for e in errs)


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    ok = run_check(EXAMPLE_CONFIG)
    assert ok.returncode == 0 and "ok (7 services, 14 windows" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE_CONFIG.read_text(encoding="utf-8").replace(
        'prefix = "B"', 'prefix = "A"').replace('timezone = "Asia/Shanghai"', 'timezone = 8'),
        encoding="utf-8")
    r = run_check(bad)
    assert r.returncode == 2
    assert "hall.timezone" in r.stderr
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[hall\nsite = 1\n", encoding="utf-8")
    r = run_check(syntax)
    assert r.returncode == 2 and "TOML syntax" in r.stderr
    r = run_check(tmp_path / "missing.toml")
    assert r.returncode == 2 and "file not found" in r.stderr
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert run_check(binary).returncode == 2


def test_cross_reference_errors_reported_after_field_errors_clear() -> None:
    raw = example()
    raw["services"][1]["prefix"] = "A"
    errs = errors_of(raw)
    assert errs == ["services[1].prefix: ticket prefix 'A' is already used"]
