"""Crash test: SIGKILL a real `hallbox run` in the middle of a burst of requests, restart it on
the same data directory, and check that nothing a client got a 2xx for was lost.

One data directory lives through all rounds, so each round also checks that every earlier
round's acknowledged tickets survived this round's crash. Each round:

1. several kiosk clients take tickets and two staff clients (windows 1 and 7) log in and loop
   call-next / start / finish, all concurrently through the HTTP API;
2. after a random 50-400 ms of load the box gets SIGKILL; requests in flight fail and do not
   count as acknowledged;
3. `hallbox verify` runs on the crashed database (what an operator would do first);
4. the box restarts on the same data directory, and the acknowledged tickets, calls, starts,
   finishes and staff sessions are checked through the API and read-only in the database:
   the chain verifies, `PRAGMA integrity_check` is ok, each acknowledged ticket has exactly one
   `ticket.issued` event, numbers are unique per service and day, the ticket table agrees with
   a replay of the journal, and every journal row has its outbox row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.verify import verify_db

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "hall.example.toml"
ROUNDS = 20
SEED = int(os.environ.get("HALLBOX_CRASH_SEED", "20261123"))
KIOSK_CLIENTS = 6
# (staff id, PIN, window): window 1 serves SHMS only, window 7 four services.
STAFF = (("S001", "8001", 1), ("S007", "8007", 7))
SERVICES = ("SHMS", "ZCDJ", "JYXK", "TZJS", "GA", "RS", "SW")
MANAGER = {"authorization": "Bearer demo-manager-token"}
KIOSK = {"authorization": "Bearer demo-kiosk-token"}
READY_TIMEOUT_S = 30.0  # liveness bound only: a loaded CI machine can be slow to import

# What each journal event does to a ticket's state, for replaying the journal.
_FOLD = {
    "ticket.issued": "waiting",
    "ticket.called": "called",
    "ticket.started": "serving",
    "ticket.finished": "finished",
    "ticket.no_show": "no_show",
    "ticket.reactivated": "waiting",
    "ticket.transferred": "transferred",
    "ticket.cancelled": "cancelled",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Box:
    """One `hallbox run` subprocess on a fixed data directory."""

    def __init__(self, data: Path, config: Path) -> None:
        self.data, self.config = data, config
        self.db = data / "hallbox.db"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.data / f"box-{self.starts}.log"

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running()
        self.starts += 1
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(self.config),
                 "--data", str(self.data), "--ignore-hours", "--no-devices",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=2, trust_env=False) as c:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"hallbox exited with {self.proc.returncode} while starting:\n"
                                + self.log_tail())
                with contextlib.suppress(httpx.TransportError):
                    if c.get("/healthz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    pytest.fail(f"hallbox not ready within {READY_TIMEOUT_S}s:\n"
                                + self.log_tail())
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Ledger:
    """What clients were told (2xx), across all rounds."""

    issued: dict[str, dict[str, Any]] = field(default_factory=dict)  # ticket id -> response
    called: dict[str, int] = field(default_factory=dict)  # ticket id -> window
    started: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    # window -> the last acknowledged session token; None when a login's answer was lost
    # (it may have replaced the token on disk, so no token is known to be valid).
    sessions: dict[int, str | None] = field(default_factory=dict)
    logins: int = 0
    unexpected: list[str] = field(default_factory=list)  # 5xx or refusals that make no sense
    ended_by_kill: int = 0  # clients stopped by a transport error (the kill)
    rounds: int = 0


@dataclass
class RoundAcks:
    issued: list[str] = field(default_factory=list)
    called: list[str] = field(default_factory=list)


@dataclass
class CrashHall:
    box: Box
    ledger: Ledger


@pytest.fixture(scope="module")
def crash_hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashHall]:
    root = tmp_path_factory.mktemp("crash")
    # The example hall with every daily cap at its maximum, so 20 rounds of bursts keep
    # issuing instead of being refused once the small services are full.
    text, n = re.subn(r"(?m)^daily_cap = \d+$", "daily_cap = 999",
                      EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert n == len(SERVICES)
    config = root / "hall.toml"
    config.write_text(text, encoding="utf-8")
    box = Box(root / "data", config)
    box.data.mkdir()
    try:
        yield CrashHall(box, Ledger())
    finally:
        box.stop()


# ---- the burst ----------------------------------------------------------------------------
def _ok_json(r: httpx.Response) -> dict[str, Any]:
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def _problem_code(r: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(r.json()["type"]).rsplit(":", 1)[-1]
    return ""


async def _kiosk(c: httpx.AsyncClient, rng: random.Random, ledger: Ledger,
                 acks: RoundAcks) -> None:
    while True:
        body: dict[str, Any] = {"service": rng.choice(SERVICES)}
        headers = {}
        if rng.random() < 0.1:  # green channel needs a kiosk token
            body["priority"] = "green"
            headers = KIOSK
        try:
            r = await c.post("/api/v1/tickets", json=body, headers=headers)
        except httpx.TransportError:
            ledger.ended_by_kill += 1
            return
        if r.status_code == 201:
            t = r.json()
            if t["id"] in ledger.issued:
                ledger.unexpected.append(f"ticket id {t['id']} acknowledged twice: "
                                         f"{ledger.issued[t['id']]} and {t}")
            ledger.issued[t["id"]] = t
            acks.issued.append(t["id"])
        elif r.status_code == 409 and _problem_code(r) == "daily-cap-reached":
            continue
        else:
            ledger.unexpected.append(f"take ticket {body}: {r.status_code} {r.text}")
            return


async def _login(c: httpx.AsyncClient, staff: str, pin: str, window: int,
                 ledger: Ledger) -> str | None:
    ledger.sessions[window] = None  # until this login is acknowledged
    r = await c.post("/api/v1/sessions", json={"staff_id": staff, "pin": pin, "window": window})
    if r.status_code != 201:
        ledger.unexpected.append(f"login {staff}: {r.status_code} {r.text}")
        return None
    token: str = r.json()["token"]
    ledger.sessions[window] = token
    ledger.logins += 1
    return token


async def _ensure_sessions(url: str, ledger: Ledger) -> None:
    """Before the load: log in whoever has no known-good session (an argon2 check takes a few
    hundred ms on a busy 2-core box, longer than many bursts last)."""
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as c:
        for staff, pin, window in STAFF:
            token = ledger.sessions.get(window)
            if token is not None:
                r = await c.get("/api/v1/whoami", headers={"authorization": f"Bearer {token}"})
                if r.status_code == 200 and r.json()["window"] == window:
                    continue
                ledger.unexpected.append(f"acknowledged session of {staff} at window "
                                         f"{window} refused after restart: {r.text}")
            await _login(c, staff, pin, window, ledger)


async def _staff(c: httpx.AsyncClient, staff: str, pin: str, window: int, relogin: bool,
             ledger: Ledger, acks: RoundAcks) -> None:
    try:
        token = ledger.sessions.get(window)
        if relogin or token is None:
            # Logging in again replaces the session row inside the login's transaction.
            token = await _login(c, staff, pin, window, ledger)
            if token is None:
                return
        auth = {"authorization": f"Bearer {token}"}
        # The last round's answers may have been lost: take the window's state as it is.
        r = await c.get(f"/api/v1/windows/{window}", headers=auth)
        if r.status_code != 200:
            ledger.unexpected.append(f"window {window}: {r.status_code} {r.text}")
            return
        view = r.json()
        if view["staff"] != staff:
            # Only after midnight: the new business day logged everyone out.
            token = await _login(c, staff, pin, window, ledger)
            if token is None:
                return
            auth = {"authorization": f"Bearer {token}"}
            view = _ok_json(await c.get(f"/api/v1/windows/{window}", headers=auth))
        cur = view["current"]
        ticket, state = (cur["id"], cur["state"]) if cur else (None, None)
        base = f"/api/v1/windows/{window}"
        while True:
            if ticket is None:
                r = await c.post(f"{base}/call-next", headers=auth)
                if r.status_code == 200:
                    called = r.json()["called"]
                    if called is None:
                        await asyncio.sleep(0.005)  # nobody waiting for this window yet
                        continue
                    ticket, state = called["id"], "called"
                    ledger.called[ticket] = window
                    acks.called.append(ticket)
                    continue
            elif state == "called":
                r = await c.post(f"{base}/start", headers=auth)
                if r.status_code == 200:
                    ledger.started.add(ticket)
                    state = "serving"
                    continue
            else:
                r = await c.post(f"{base}/finish", headers=auth)
                if r.status_code == 200:
                    ledger.finished.add(ticket)
                    ticket = state = None
                    continue
            ledger.unexpected.append(f"{staff} at window {window} with {ticket} "
                                     f"({state}): {r.status_code} {r.text}")
            return
    except httpx.TransportError:
        ledger.ended_by_kill += 1


async def _burst(h: CrashHall, rng: random.Random, kill_after: float,
                 relogin: bool) -> RoundAcks:
    acks = RoundAcks()
    box = h.box

    async def killer() -> None:
        await asyncio.sleep(kill_after)
        box.kill()

    await _ensure_sessions(box.url, h.ledger)
    async with contextlib.AsyncExitStack() as stack:
        # Clients are made before the load starts: making one costs tens of ms (TLS context),
        # which would otherwise eat the short bursts.
        clients = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=box.url, timeout=10, trust_env=False))
            for _ in range(KIOSK_CLIENTS + len(STAFF))]
        workers = [_kiosk(clients[i], random.Random(rng.random()), h.ledger, acks)
                   for i in range(KIOSK_CLIENTS)]
        workers += [_staff(clients[KIOSK_CLIENTS + i], s, pin, w, relogin, h.ledger, acks)
                    for i, (s, pin, w) in enumerate(STAFF)]
        await asyncio.gather(killer(), *workers)
    return acks


# ---- the checks ---------------------------------------------------------------------------
def _replay(db: sqlite3.Connection) -> dict[str, str]:
    """Each ticket's state according to the journal alone."""
    state: dict[str, str] = {}
    for typ, raw in db.execute("SELECT type, envelope FROM journal ORDER BY seq"):
        data = json.loads(raw)["data"]
        if typ in _FOLD:
            state[data["ticket"]] = _FOLD[typ]
        elif typ == "day.opened":
            for t in data["cancelled_tickets"]:
                state[t] = "cancelled"
    return state


def _check_database(h: CrashHall) -> None:
    led = h.ledger
    db = sqlite3.connect(f"file:{h.box.db}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tickets = {tid: (json.loads(doc), state) for tid, doc, state in
                   db.execute("SELECT id, doc, state FROM tickets")}
        issued_events = Counter(
            json.loads(raw)["data"]["ticket"] for (raw,) in
            db.execute("SELECT envelope FROM journal WHERE type='ticket.issued'"))
        events_of: dict[str, set[str]] = {}
        called_at: dict[str, int] = {}
        for typ, raw in db.execute("SELECT type, envelope FROM journal WHERE type IN "
                                   "('ticket.called','ticket.started','ticket.finished')"):
            data = json.loads(raw)["data"]
            events_of.setdefault(data["ticket"], set()).add(typ)
            if typ == "ticket.called":
                called_at[data["ticket"]] = data["window"]

        # Every acknowledged ticket is there, as the client was told, issued exactly once.
        for tid, ack in led.issued.items():
            assert tid in tickets, f"acknowledged ticket {tid} lost"
            doc = tickets[tid][0]
            assert (doc["number"], doc["service"], doc["priority"], doc["source"]) == (
                ack["number"], ack["service"], ack["priority"], ack["source"]), tid
            assert issued_events[tid] == 1, f"{tid}: {issued_events[tid]} ticket.issued events"
        # No ticket was issued twice under one id (a reused number would replace a row).
        assert [t for t, n in issued_events.items() if n > 1] == []
        numbers = Counter((d["day"], d["service"], d["number"]) for d, _ in tickets.values())
        assert [k for k, n in numbers.items() if n > 1] == []

        # Acknowledged staff operations happened, at the window that did them.
        for tid, window in led.called.items():
            doc, state = tickets[tid]
            assert state not in ("waiting", "cancelled"), f"acknowledged call of {tid}: {state}"
            assert doc["window"] == window and called_at.get(tid) == window, tid
        for tid in led.started:
            assert tickets[tid][1] in ("serving", "finished"), tid
            assert "ticket.started" in events_of.get(tid, set()), tid
        for tid in led.finished:
            assert tickets[tid][1] == "finished", tid
            assert "ticket.finished" in events_of.get(tid, set()), tid

        # State and journal were written together: replaying the journal gives the table.
        replay = _replay(db)
        table = {tid: state for tid, (_, state) in tickets.items()}
        assert replay == table

        # Every journal row has its outbox row and nothing else is queued.
        (n_journal, max_journal), = db.execute("SELECT count(*), max(seq) FROM journal")
        (n_outbox, max_outbox), = db.execute("SELECT count(*), max(seq) FROM outbox")
        assert n_journal == max_journal  # gapless
        assert (n_outbox, max_outbox) == (n_journal, max_journal)
        orphans = db.execute("SELECT count(*) FROM journal j LEFT JOIN outbox o "
                             "ON o.seq = j.seq WHERE o.seq IS NULL").fetchone()[0]
        assert orphans == 0
    finally:
        db.close()


def _check_api(h: CrashHall, acks: RoundAcks) -> tuple[int, str]:
    led = h.ledger
    with httpx.Client(base_url=h.box.url, timeout=10, trust_env=False) as c:
        # Only today's tickets are in the API (a round may straddle midnight); the database
        # check covers every day.
        today = c.get("/api/v1/board").json()["day"].replace("-", "") + "-"
        for tid in (t for t in acks.issued if t.startswith(today)):
            r = c.get(f"/api/v1/tickets/{tid}", headers=MANAGER)
            assert r.status_code == 200, f"acknowledged ticket {tid}: {r.status_code} {r.text}"
            t, ack = r.json(), led.issued[tid]
            assert (t["number"], t["service"], t["issued_at"]) == (
                ack["number"], ack["service"], ack["issued_at"])
        for tid in (t for t in acks.called if t.startswith(today)):
            t = c.get(f"/api/v1/tickets/{tid}", headers=MANAGER).json()
            assert t["state"] in ("called", "serving", "finished"), t
            assert t["window"] == led.called[tid], t
        for window, token in led.sessions.items():
            if token is None:
                continue  # the last login's answer was lost: no token is known good
            r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, f"acknowledged session at window {window}: {r.text}"
            assert r.json()["window"] == window
        # The restarted box continues the chain from the head on disk.
        head = c.get("/healthz").json()["seq"]
        r = c.get("/api/v1/events", params={"after_seq": max(0, head - 1)}, headers=MANAGER)
        assert r.status_code == 200
        events = r.json()["events"]
        assert [e["seq"] for e in events] == [head]
        return head, events[0]["hash"]


def _hallbox_verify(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "verify", str(db)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("round_no", range(ROUNDS))
def test_sigkill_during_burst_loses_nothing_acknowledged(crash_hall: CrashHall,
                                                          round_no: int) -> None:
    h = crash_hall
    rng = random.Random(SEED * 1000 + round_no)
    if not h.box.running():
        h.box.start()
    kill_after = rng.uniform(0.05, 0.4)
    acks = asyncio.run(_burst(h, rng, kill_after, relogin=round_no % 3 == 0))
    assert h.box.proc is not None
    assert h.box.proc.wait(10) == -signal.SIGKILL
    h.ledger.rounds += 1
    assert h.ledger.unexpected == [], h.box.log_tail()

    # First thing after a crash: is the journal intact as the crash left it?
    v = _hallbox_verify(h.box.db)
    assert v.returncode == 0, f"hallbox verify after SIGKILL at {kill_after:.3f}s: " \
                              f"{v.stdout}{v.stderr}"
    assert "intact" in v.stdout

    h.box.start()
    head = _check_api(h, acks)
    _check_database(h)
    r = verify_db(h.box.db)
    assert r.ok, r
    assert r.head_seq == r.events > 0
    assert (r.head_seq, r.head_hash) == head


def test_crash_rounds_did_real_work(crash_hall: CrashHall) -> None:
    """The rounds above prove something only if the kills hit a busy box."""
    led = crash_hall.ledger
    db = sqlite3.connect(f"file:{crash_hall.box.db}?mode=ro", uri=True)
    try:
        stored = db.execute("SELECT count(*) FROM tickets").fetchone()[0]
    finally:
        db.close()
    # With -s: how much the rounds did; stored - acknowledged = answers the kills cut off.
    print(f"\ncrash rounds {led.rounds}: {len(led.issued)} tickets acknowledged, {stored} "
          f"stored; {len(led.called)} calls, {len(led.started)} starts, "
          f"{len(led.finished)} finishes, {led.logins} logins acknowledged")
    if led.rounds < ROUNDS:
        pytest.skip("only meaningful after all crash rounds ran")
    assert len(led.issued) >= ROUNDS
    assert led.called and led.started and led.finished and led.logins >= 2
    # Every client ran until the kill cut it off (none stopped early on its own).
    assert led.ended_by_kill == ROUNDS * (KIOSK_CLIENTS + len(STAFF))
