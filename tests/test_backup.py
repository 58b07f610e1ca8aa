"""Backups: an online copy while the box takes tickets, restore with the box stopped, the chain
verifying after it; the daily copy with its retention; a tampered copy is not restored."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.backup import BackupError, BoxLock, DailyBackup, backup, next_run, prune, restore
from edge.clock import FakeClock
from edge.config import ConfigError, parse_config
from edge.runtime import HallRuntime
from edge.verify import verify_db
from tests.conftest import MONDAY_0900
from tests.ops_fixtures import BoxProcess, hall_config_text

KIOSK = {"Authorization": "Bearer demo-kiosk-token"}


def hallbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_backup_while_running_restore_when_stopped(tmp_path: Path) -> None:
    cfg = tmp_path / "hall.toml"
    cfg.write_text(hall_config_text(), encoding="utf-8")
    data = tmp_path / "data"
    box = BoxProcess(cfg, data).start()
    stop = threading.Event()
    taken: list[int] = []
    refused: list[str] = []
    services = ["SHMS", "ZCDJ", "JYXK", "TZJS", "GA", "RS", "SW"]

    def take_tickets() -> None:
        with httpx.Client(base_url=box.url, headers=KIOSK, timeout=10) as c:
            while not stop.is_set():
                r = c.post("/api/v1/tickets", json={"service": services[len(taken) % 7]})
                if r.status_code != 201:
                    refused.append(r.text)
                    return
                taken.append(1)
                stop.wait(0.005)  # a busy hall, well within the daily caps

    writer = threading.Thread(target=take_tickets)
    writer.start()
    try:
        while len(taken) < 20:
            stop.wait(0.05)
        copies = []
        for name in ("first.db", "second.db"):
            r = hallbox("backup", str(tmp_path / "copies" / name), "--data", str(data))
            assert r.returncode == 0, r.stderr
            assert "chain verified" in r.stdout
            copies.append(tmp_path / "copies" / name)
        # A directory as DEST: a dated copy in it.
        r = hallbox("backup", str(tmp_path / "daily") + "/", "--data", str(data))
        assert r.returncode == 0 and list((tmp_path / "daily").glob("hallbox-*.db")), r.stderr
        # While the box runs, restore refuses and changes nothing.
        r = hallbox("restore", str(copies[0]), "--data", str(data))
        assert r.returncode == 1 and "stop it first" in r.stderr
    finally:
        stop.set()
        writer.join(30)
        assert box.stop() == 0
    assert len(taken) >= 20 and refused == []
    first, second = verify_db(copies[0]), verify_db(copies[1])
    live = verify_db(data / "hallbox.db")
    assert first.ok and second.ok and live.ok
    assert 0 < first.head_seq <= second.head_seq <= live.head_seq

    r = hallbox("restore", str(copies[0]), "--data", str(data))
    assert r.returncode == 0, r.stderr
    restored = verify_db(data / "hallbox.db")
    assert restored.ok and restored.head_seq == first.head_seq
    assert restored.head_hash == first.head_hash
    aside = next(data.glob("replaced-*"))
    assert verify_db(aside / "hallbox.db").head_seq == live.head_seq
    # The box runs on the restored database and the chain goes on from it.
    box2 = BoxProcess(cfg, data).start()
    try:
        r = httpx.post(f"{box2.url}/api/v1/tickets", json={"service": "SHMS"}, headers=KIOSK,
                       timeout=10)
        assert r.status_code == 201, r.text
    finally:
        assert box2.stop() == 0
    after = verify_db(data / "hallbox.db")
    assert after.ok and after.head_seq > first.head_seq
    v = hallbox("verify", str(data))
    assert v.returncode == 0 and "intact" in v.stdout


def test_one_box_per_data_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "hall.toml"
    cfg.write_text(hall_config_text(), encoding="utf-8")
    box = BoxProcess(cfg, tmp_path / "data").start()
    try:
        assert BoxLock.held(tmp_path / "data")
        r = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg),
                            "--data", str(tmp_path / "data"), "--port", "1", "--no-devices"],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 1 and "another hallbox is running" in r.stderr
    finally:
        box.stop()
    assert not BoxLock.held(tmp_path / "data")


def _runtime(tmp_path: Path, clock: FakeClock) -> HallRuntime:
    cfg = parse_config(__import__("tomllib").loads(hall_config_text()))
    rt = HallRuntime.open(cfg, tmp_path / "data", clock=clock, ignore_hours=True)
    rt.tick()
    return rt


def test_tampered_copy_is_not_restored(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, FakeClock(MONDAY_0900))
    rt.close()
    copy = backup(tmp_path / "data", tmp_path / "copy.db").path
    with sqlite3.connect(copy) as db:
        db.execute("DROP TRIGGER journal_no_update")
        db.execute("UPDATE journal SET envelope = replace(envelope, 'day.opened', 'day.closed')")
    before = (tmp_path / "data" / "hallbox.db").read_bytes()
    with pytest.raises(BackupError, match="does not verify"):
        restore(copy, tmp_path / "data")
    assert (tmp_path / "data" / "hallbox.db").read_bytes() == before
    with pytest.raises(BackupError, match="exists"):
        backup(tmp_path / "data", copy)


def test_daily_backup_keeps_the_newest_and_reports_failure(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_0900)
    rt = _runtime(tmp_path, clock)
    reports: list[tuple[bool, str]] = []
    directory = tmp_path / "backups"
    daily = DailyBackup(rt.store.path, directory, at="02:30", keep=2, now=rt.hall.local,
                        report=lambda ok, detail: reports.append((ok, detail)))

    async def days() -> list[Any]:
        out = []
        for _ in range(3):
            out.append(await daily.run_once())
            clock.advance(days=1)
        return out

    results = asyncio.run(days())
    assert all(r is not None for r in results)
    kept = sorted(p.name for p in directory.glob("hallbox-*.db"))
    assert kept == sorted(p.path.name for p in results[1:])  # the oldest went
    assert reports == [(True, "")] * 3
    # A destination that cannot be written: reported, nothing raised.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    daily.directory = blocker / "sub"
    assert asyncio.run(daily.run_once()) is None
    assert reports[-1][0] is False and reports[-1][1]
    rt.close()


def test_schedule_and_prune_and_config() -> None:
    now = datetime(2026, 11, 23, 9, 0)
    assert next_run(now, "02:30") == datetime(2026, 11, 24, 2, 30)
    assert next_run(now, "23:00") == datetime(2026, 11, 23, 23, 0)
    with pytest.raises(ConfigError) as e:
        parse_config({**__import__("tomllib").loads(hall_config_text()),
                      "backup": {"at": "25:00"}})
    assert "backup.at" in str(e.value)
    assert prune(Path("/nonexistent"), 3) == []
