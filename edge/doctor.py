"""`hallbox doctor`: one screen that says what is wrong with this box and what to do about it.

Each check gives a status (ok, warn, fail), what it found and, for a problem, the fix. It reads
the config, the database (read-only), the running box's /healthz and device health (from
/api/v1/health with a manager token, else from the journal's latest device.health events), the
clock's sync state, the disks, and, where the config has them, the cameras. Exit 0 when
nothing fails (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from edge.config import ConfigError, HallConfig, load_config
from edge.logs import REDACT

Status = Literal["ok", "warn", "fail"]
# Free space below these: the outbox and the recordings can no longer grow safely.
DATA_MIN_FREE_MB = 1024
RECORDINGS_MIN_FREE_MB = 10 * 1024
BACKUP_MAX_AGE_H = 36
DEMO_TOKENS = ("demo-kiosk-token", "demo-manager-token", "demo-central-token")
# Optional areas of the config and the module that knows how to check them; a module missing
# from this build makes its check fail (configured but not supported), never the doctor.
AREA_CHECKS = {"video": "edge.doctor_video"}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))


@dataclass
class Context:
    """What every check may look at; area checks (cameras) get it too."""

    config_path: Path
    data_dir: Path
    config: HallConfig | None = None
    live: dict[str, Any] | None = None  # /healthz of the running box
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # device id -> health
    health_source: str = ""


def run_doctor(config_path: Path, data_dir: Path, *, url: str | None = None,
               token: str | None = None) -> Report:
    rep = Report()
    ctx = Context(config_path, data_dir)
    check_config(ctx, rep)
    check_database(ctx, rep)
    check_box(ctx, rep, url, token)
    if ctx.config is not None:
        check_devices(ctx, rep)
        check_broker(ctx, rep)
        check_backups(ctx, rep)
        for area, module in AREA_CHECKS.items():
            if getattr(ctx.config, area, None):
                run_area(area, module, ctx, rep)
    check_clock(rep)
    check_disk("disk: data", data_dir, DATA_MIN_FREE_MB, rep,
               "the database and the outbox live here; free space or move old backups away")
    return rep


def run_area(area: str, module: str, ctx: Context, rep: Report) -> None:
    try:
        checks: Callable[[Context], list[Check]] = importlib.import_module(module).doctor_checks
    except (ImportError, AttributeError):
        rep.add(area, "fail", f"the config has [{area}] but this build cannot check them",
                "install a hallbox version with this feature, or remove the section")
        return
    try:
        rep.checks += checks(ctx)
    except Exception as e:
        rep.add(area, "fail", f"checking {area} failed: {e}", "run `hallbox doctor` again; "
                "if it repeats, report it with this output")


# ---- config and database --------------------------------------------------------------------
def check_config(ctx: Context, rep: Report) -> None:
    try:
        ctx.config = load_config(ctx.config_path)
    except ConfigError as e:
        issues = REDACT("; ".join(str(i) for i in e.issues[:5]))
        more = f" (+{len(e.issues) - 5} more)" if len(e.issues) > 5 else ""
        rep.add("config", "fail", f"{ctx.config_path}: {issues}{more}",
                f"edit {ctx.config_path} at the key paths shown; check with "
                f"`hallbox check-config {ctx.config_path}`")
        return
    cfg = ctx.config
    rep.add("config", "ok", f"{ctx.config_path}: {cfg.hall.site}/{cfg.hall.box}, "
            f"{len(cfg.services)} services, {len(cfg.windows)} windows, {len(cfg.staff)} staff")
    demo = {hashlib.sha256(t.encode()).hexdigest() for t in DEMO_TOKENS}
    used = [t.name for t in cfg.api.tokens if t.token_sha256 in demo]
    if used:
        rep.add("credentials", "fail", f"API tokens from the example are in use: "
                f"{', '.join(used)} (anyone who read the example can act as them)",
                "make new tokens (python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
                "), put only their sha256 in [[api.tokens]]")


def check_database(ctx: Context, rep: Report) -> None:
    db = ctx.data_dir / "hallbox.db"
    if not db.is_file():
        rep.add("database", "warn", f"no database at {db} yet",
                "start the box once (systemctl start hallbox); it creates it")
        return
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            version = int(con.execute("PRAGMA user_version").fetchone()[0])
            head = con.execute("SELECT max(seq) FROM journal").fetchone()[0] or 0
            pending = con.execute(
                "SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as e:
        rep.add("database", "fail", f"{db}: {e}",
                "stop the box, run `hallbox verify` on it; restore the last backup if broken")
        return
    expected = _schema_version()
    if version > expected:
        rep.add("schema", "fail", f"database schema {version} is newer than this hallbox "
                f"({expected})", "install the hallbox version that wrote it (no downgrades)")
    elif version < expected:
        rep.add("schema", "warn", f"database schema {version}; this hallbox upgrades it to "
                f"{expected} at start",
                "take a copy first (hallbox backup DIR/), then start the box")
    else:
        rep.add("schema", "ok", f"schema version {version}")
    rep.add("database", "ok", f"{db}: journal head seq {head}, {pending} events not yet sent")


def _schema_version() -> int:
    from edge.migrations import LATEST

    return LATEST


# ---- the running box ----------------------------------------------------------------------
def check_box(ctx: Context, rep: Report, url: str | None, token: str | None) -> None:
    if url is None and ctx.config is not None:
        host = ctx.config.api.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        url = f"http://{host}:{ctx.config.api.port}"
    if url is None:
        return
    try:
        r = httpx.get(f"{url}/healthz", timeout=3)
        r.raise_for_status()
        ctx.live = r.json()
    except (httpx.HTTPError, ValueError) as e:
        rep.add("box", "fail", f"the box does not answer at {url}: {type(e).__name__}",
                "systemctl status hallbox; journalctl -u hallbox -e shows why it stopped")
    else:
        rep.add("box", "ok", f"serving at {url}, journal head seq {ctx.live.get('seq')}")
    if ctx.live is not None and token:
        try:
            r = httpx.get(f"{url}/api/v1/health", timeout=3,
                          headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            ctx.devices = {d["device"]: d for d in r.json()["devices"]}
            ctx.health_source = "live"
            return
        except (httpx.HTTPError, ValueError, KeyError) as e:
            rep.add("health", "warn", f"could not read live health: {type(e).__name__}",
                    "check the token (a manager token); falling back to the journal")
    ctx.devices = journal_health(ctx.data_dir / "hallbox.db")
    ctx.health_source = "journal"


def journal_health(db: Path) -> dict[str, dict[str, Any]]:
    """The latest device.health event of each device, from the journal (read-only)."""
    if not db.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for (env,) in con.execute(
                    "SELECT envelope FROM journal WHERE type='device.health' ORDER BY seq"):
                data = json.loads(env)["data"]
                out[data["device"]] = data
        finally:
            con.close()
    except (sqlite3.Error, ValueError, KeyError):
        return {}
    return out


def _present(port: str) -> tuple[bool, str]:
    """Is the device's connection there at all (before asking whether it answers)?"""
    if port.startswith("tcp://"):
        host, _, p = port[6:].rpartition(":")
        return _tcp(host, int(p))
    if port.startswith("usb://"):
        vidpid = port[6:].split("?", 1)[0].lower()
        for d in Path("/sys/bus/usb/devices").glob("*"):
            try:
                vid = (d / "idVendor").read_text().strip()
                pid = (d / "idProduct").read_text().strip()
            except OSError:
                continue
            if f"{vid}:{pid}" == vidpid:
                return True, f"USB {vidpid} at {d.name}"
        return False, f"no USB device {vidpid} plugged in"
    if os.path.exists(port):
        return True, port
    return False, f"{port} does not exist"


def _tcp(host: str, port: int) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True, f"{host}:{port} reachable"
    except OSError as e:
        return False, f"{host}:{port} unreachable: {e.strerror or e}"


def configured_devices(cfg: HallConfig) -> list[tuple[str, str, str | None]]:
    """(device id, class, how to find it: a port, tcp:// or usb://; None: through a bus)."""
    dev = cfg.devices
    if dev is None:
        return []
    out: list[tuple[str, str, str | None]] = []
    out += [(p.id, "printer", p.port) for p in dev.printers]
    out += [(b.id, "bus", b.port) for b in dev.buses]
    out += [(b.id, "board", None) for b in dev.boards]
    out += [(k.id, "keypad", None) for k in dev.keypads]
    out += [(e.id, "evaluator", None) for e in dev.evaluators]
    out += [(a.id, "attendance", f"tcp://{a.host}:{a.port}") for a in dev.attendance]
    out += [(f.id, "fingerprint", f.port) for f in dev.fingerprints]
    return out


def check_devices(ctx: Context, rep: Report) -> None:
    """A line per device with a problem; the healthy and the unknown ones summed up in one."""
    assert ctx.config is not None
    devices = configured_devices(ctx.config)
    if not devices:
        return
    healthy: list[str] = []
    unknown: list[str] = []
    for dev_id, cls, where in devices:
        name = f"{cls}: {dev_id}"
        if where is not None:
            present, what = _present(where)
            if not present:
                rep.add(name, "fail", what, _plug_fix(cls, where))
                continue
        h = ctx.devices.get(dev_id)
        if ctx.live is None or h is None:
            unknown.append(dev_id)
        elif not h.get("online"):
            rep.add(name, "fail", f"not answering (grade {h.get('grade')}): {h.get('detail')}",
                    _answer_fix(cls))
        elif h.get("grade"):
            rep.add(name, "warn", f"degraded (grade {h['grade']}): {h.get('detail')}",
                    _answer_fix(cls))
        else:
            healthy.append(dev_id)
    if unknown:
        listed = ", ".join(unknown[:6]) + (f" +{len(unknown) - 6} more" if len(unknown) > 6
                                           else "")
        if ctx.live is None:
            rep.add("devices", "warn", f"{len(unknown)} cannot be asked, the box is not "
                    f"running: {listed}", "start the box, then run the doctor again")
        else:
            rep.add("devices", "warn", f"{len(unknown)} reported no health yet "
                    f"({ctx.health_source}): {listed}", "wait a minute after start; if they "
                    "stay silent, check their wiring and address in the config")
    if healthy:
        rep.add("devices", "ok", f"{len(healthy)} of {len(devices)} present and answering")


def _plug_fix(cls: str, where: str) -> str:
    if where.startswith("tcp://"):
        return "check the device is powered and on the hall LAN at that address"
    return ("plug it in; if it is, `udevadm info -a -n /dev/ttyUSB0` shows its ids: add them to "
            "/etc/udev/rules.d/99-hallbox.rules and point the config at /dev/hallbox/...")


def _answer_fix(cls: str) -> str:
    return {
        "printer": "paper, cover and power of the printer; baud rate in the config",
        "board": "power and RS-485 wiring (A/B) of the board; its address and protocol",
        "keypad": "RS-485 wiring of the keypad and its address",
        "evaluator": "the tablet's network and its pairing token",
        "attendance": "the terminal's network, port 4370 and its communication password",
        "fingerprint": "the sensor's cable and baud rate",
        "link": "the broker address, credentials and the hall's network to the central room",
    }.get(cls, "power and wiring of the device")


def check_broker(ctx: Context, rep: Report) -> None:
    cfg = ctx.config
    assert cfg is not None
    if cfg.mqtt is None:
        rep.add("broker", "warn", "no [mqtt] section: the central room gets no feed",
                "add [mqtt] with the central room's broker (see mqtt.example.toml: "
                "`hallbox example-config mqtt.example.toml`)")
        return
    b = cfg.mqtt.broker()
    ok, what = _tcp(b.host, b.port)
    if not ok:
        rep.add("broker", "fail", what,
                "check the hall's network and firewall to the central room's broker")
        return
    h = ctx.devices.get("mqtt-link")
    if h is not None and not h.get("online"):
        rep.add("broker", "fail", f"reachable but the link is down: {h.get('detail')}",
                "check [mqtt] credentials/certificates with the central room")
    else:
        backlog = (h or {}).get("metrics", {}).get("backlog")
        rep.add("broker", "ok", what + (f", backlog {backlog}" if backlog is not None else ""))


def check_backups(ctx: Context, rep: Report) -> None:
    cfg = ctx.config
    assert cfg is not None
    if not cfg.backup.enabled:
        rep.add("backups", "warn", "daily backups are off ([backup] enabled = false)",
                "turn them on, or back up with `hallbox backup` from cron")
        return
    directory = Path(cfg.backup.dir)
    if not directory.is_absolute():
        directory = ctx.data_dir / directory
    copies = sorted(directory.glob("hallbox-*.db"))
    if not copies:
        rep.add("backups", "warn", f"no backup in {directory} yet",
                f"the first is made at {cfg.backup.at}; make one now: "
                f"hallbox backup {directory}/")
        return
    age_h = (datetime.now().timestamp() - copies[-1].stat().st_mtime) / 3600
    status: Status = "ok" if age_h <= BACKUP_MAX_AGE_H else "warn"
    rep.add("backups", status, f"{len(copies)} in {directory}, newest {age_h:.0f} h old",
            "" if status == "ok" else "the daily backup is not running: see "
            "journalctl -u hallbox | grep backup")
    check_disk("disk: backups", directory, DATA_MIN_FREE_MB, rep,
               "lower [backup] keep or move the backups to a larger disk")


# ---- the machine --------------------------------------------------------------------------
def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def check_clock(rep: Report) -> None:
    """Journal timestamps are evidence: the clock must be synchronised (NTP)."""
    out = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if out is not None:
        if out.strip() == "yes":
            rep.add("clock", "ok", "synchronised (timedatectl)")
        else:
            rep.add("clock", "fail", "not synchronised (timedatectl)",
                    "apt-get install systemd-timesyncd (or chrony) and point it at the hall's "
                    "NTP server; timedatectl set-ntp true")
        return
    out = _run(["chronyc", "-n", "tracking"])
    if out is not None:
        normal = "Leap status     : Normal" in out
        rep.add("clock", "ok" if normal else "fail",
                "synchronised (chrony)" if normal else "chrony is not synchronised",
                "" if normal else "check `chronyc sources`: the NTP server must be reachable")
        return
    rep.add("clock", "warn", "cannot tell whether the clock is synchronised (no timedatectl "
            "answer, no chrony)", "install systemd-timesyncd or chrony; journal times are "
            "evidence")


def check_disk(name: str, path: Path, min_free_mb: int, rep: Report, fix: str) -> None:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
    except OSError as e:
        rep.add(name, "fail", f"{path}: {e}", fix)
        return
    free_mb = usage.free // (1024 * 1024)
    pct = usage.used * 100 // max(usage.total, 1)
    status: Status = "ok" if free_mb >= min_free_mb else "fail"
    rep.add(name, status, f"{path}: {free_mb} MB free ({pct}% used)",
            "" if status == "ok" else fix)


# ---- output -------------------------------------------------------------------------------
_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def print_report(rep: Report, *, as_json: bool = False) -> None:
    if as_json:
        json.dump({"healthy": rep.healthy, "checks": [asdict(c) for c in rep.checks]},
                  sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return
    width = min(max((len(c.name) for c in rep.checks), default=10), 28)
    for c in rep.checks:
        print(f"{_MARK[c.status]}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != "ok":
            print(f"{'':4}  {'':<{width}}  -> {c.fix}")
    fails = sum(c.status == "fail" for c in rep.checks)
    warns = sum(c.status == "warn" for c in rep.checks)
    print(f"\n{'healthy' if rep.healthy else 'NOT healthy'}: {fails} problem(s), "
          f"{warns} warning(s)")
