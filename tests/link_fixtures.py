"""Fixtures for the link tests: a real Mosquitto (password file, ACL, TLS from a test CA made
with `cryptography`), a fresh PostgreSQL schema per test, and a box runtime with its link.

Import the fixtures you use into a test module: `from link_fixtures import broker, ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MOSQUITTO = "/usr/sbin/mosquitto"
SITE = "t"
BOXES = ["box-1", "box-2", "box-3"]
CENTRAL_USER, CENTRAL_PASS = "central", "central-pw"
CMD_KEY = "k" * 8 + "-test-command-key"


def box_password(box: str) -> str:
    return f"pw-{box}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- a test CA --------------------------------------------------------------------------------
@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(k: ec.EllipticCurvePrivateKey, p: Path) -> None:
    p.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          san: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                          False), critical=True)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path, clients: list[str]) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("hallbox test CA", ca_key, None, ca_key, ca=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    sk = _key()
    sc = _cert("localhost", sk, ca.subject, ca_key, san=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (d / "server.pem").write_bytes(sc.public_bytes(serialization.Encoding.PEM))
    _write_key(sk, d / "server.key")
    out: dict[str, tuple[Path, Path]] = {}
    for c in clients:
        k = _key()
        cert = _cert(c, k, ca.subject, ca_key)
        (d / f"{c}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(k, d / f"{c}.key")
        out[c] = (d / f"{c}.pem", d / f"{c}.key")
    return Pki(d, d / "ca.pem", d / "server.pem", d / "server.key", out)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), [*BOXES, "central", "intruder"])


# ---- Mosquitto ------------------------------------------------------------------------------
ACL_TEMPLATE = """\
user {central}
topic readwrite hallbox/v1/#
"""
ACL_BOX = """\
user {box}
topic write hallbox/v1/{site}/{box}/status
topic write hallbox/v1/{site}/{box}/events/#
topic write hallbox/v1/{site}/{box}/health/#
topic write hallbox/v1/{site}/{box}/reply/#
topic read hallbox/v1/{site}/{box}/cmd/#
"""


@dataclass
class Broker:
    dir: Path
    pki: Pki
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        pw = self.dir / "passwd"
        pw.write_text("")
        users = {CENTRAL_USER: CENTRAL_PASS, **{b: box_password(b) for b in BOXES}}
        for u, p in users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pw), u, p], check=True,
                           capture_output=True)
        acl = ACL_TEMPLATE.format(central=CENTRAL_USER) + "".join(
            ACL_BOX.format(box=b, site=SITE) for b in BOXES)
        (self.dir / "acl").write_text(acl)
        (self.dir / "data").mkdir(exist_ok=True)
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"""\
per_listener_settings false
user {getpass.getuser()}
allow_anonymous false
password_file {pw}
acl_file {self.dir / 'acl'}
persistence true
persistence_location {self.dir / 'data'}/
autosave_interval 1
max_queued_messages 1000000
max_inflight_messages 100
log_dest file {self.dir / 'mosquitto.log'}
log_type error
log_type warning
log_type notice
listener {self.port} 127.0.0.1
listener {self.tls_port} 127.0.0.1
cafile {self.pki.ca}
certfile {self.pki.server_cert}
keyfile {self.pki.server_key}
require_certificate true
""")
        return conf

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        if not conf.exists():
            self.write_config()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited: " + self.log())
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start: " + self.log())

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final save."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def url(self, user: str, password: str, tls: bool = False) -> str:
        return (f"mqtts://{user}:{password}@127.0.0.1:{self.tls_port}" if tls
                else f"mqtt://{user}:{password}@127.0.0.1:{self.port}")

    def central_url(self) -> str:
        return self.url(CENTRAL_USER, CENTRAL_PASS)


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", pki)
    b.dir.mkdir()
    b.write_config()
    b.start()
    yield b
    b.stop()


# ---- PostgreSQL: one database per session, one schema per test --------------------------------
PG_BASE = os.environ.get("HALLBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=3)
    except Exception as e:
        pytest.skip(f"no PostgreSQL reachable at {PG_BASE}: {e}")
    name = f"hallbox_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_dsn(pg_database: str) -> str:
    import psycopg

    schema = f"t_{secrets.token_hex(4)}"
    with psycopg.connect(pg_database, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_database}?options=-csearch_path%3D{schema}"


# ---- the box ----------------------------------------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "hall.example.toml"


def box_config(box: str, url: str | None, **mqtt: Any) -> Any:
    import tomllib

    from edge.config import parse_config

    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    raw["hall"]["site"], raw["hall"]["box"] = SITE, box
    raw.pop("mqtt", None)
    if url is not None:
        raw["mqtt"] = {"url": url, "command_key": CMD_KEY, "reconnect_min_s": 0.1,
                       "reconnect_max_s": 0.5, "status_interval_s": 0.5, "rate_per_s": 100000,
                       **mqtt}
    return parse_config(raw)


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """A liveness bound, not a timing assertion: generous, and says what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s: {what}")


async def await_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


class BoxThread:
    """A box runtime with its link on its own asyncio loop thread, for blocking test clients.

    Everything touching the runtime goes through `call` (the loop thread owns it)."""

    def __init__(self, data: Path, cfg: Any) -> None:
        import threading

        from edge.assembly import HallServices
        from edge.link.commands import builtin_commands
        from edge.link.sender import Link
        from edge.runtime import HallRuntime
        from edge.supervision import install

        self.loop = asyncio.new_event_loop()
        self.cfg = cfg
        self.rt: Any = None
        self.link: Any = None
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.rt = HallRuntime.open(cfg, data, ignore_hours=True)
            # The command table as the assembly builds it (the supervision feature's too).
            self.services = HallServices(commands=builtin_commands())
            install(self.rt, self.services)
            self.link = Link(self.rt, cfg.mqtt, self.services.commands, self.services)
            self.loop.run_until_complete(self.link.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        wait_for(lambda: self.call(lambda: self.link.connected), 10, "box connected")

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrap() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.link.stop(), self.loop).result(10)
        self.call(self.rt.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def link_health(rt: Any) -> Any:
    """The link's last health report, None before its first connection attempt."""
    return rt.health.current.get("mqtt-link")
