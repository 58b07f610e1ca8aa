"""Crash test: SIGKILL a real `hallbox run` in the middle of a burst of requests, restart it on
the same data directory, and check that nothing a client got a 2xx for was lost.

One data directory lives through all rounds, so each round also checks that every earlier
round's acknowledged operations survived this round's crash. Each round:

1. several kiosk clients take tickets and two staff clients (windows 1 and 7) log in and work
   their windows: call-next, then start / no-show / transfer, then finish / transfer, and
   reactivate tickets they marked no-show earlier, all concurrently through the HTTP API;
2. every 5th round the business day changes during the burst: the box's wall clock (its own,
   through libfaketime; the box has no test hook) jumps a day ahead as at midnight, so the next
   operation opens the day (cancels the day's leftovers and ends every session in the same
   transaction); the kill lands a few ms or a few hundred ms later, so before or after that
   commit;
3. after a random 50-400 ms of load (in the day-changing rounds: 50-200 ms, then the change,
   then 0-30 or 150-400 ms) the box gets SIGKILL; requests in flight fail and do not count as
   acknowledged;
4. `hallbox verify` runs on the crashed database (what an operator would do first);
5. the box restarts on the same data directory and is checked through the API and read-only in
   the database: the chain verifies, `PRAGMA integrity_check` is ok, each acknowledged
   operation's event is in the journal, in the order that client was told of them (a transfer's
   event names the new ticket, which is issued exactly once), numbers are unique per service and
   day, each day opening cancelled exactly the previous day's unfinished tickets, once, and no
   session from before it is left, the ticket table agrees with a replay of the journal, and
   every journal row has its outbox row.

Why libfaketime and not an edited `meta.day`: ticket ids and numbers carry their day, so a box
told that today's tickets are yesterday's would restart numbering on top of them; only a clock
that really moves on gives the state a box left on overnight has.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from edge.verify import verify_db

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "hall.example.toml"
HALL_TZ = ZoneInfo("Asia/Shanghai")  # the example hall's timezone: its business days
ROUNDS = 20
DAY_CHANGE_EVERY = 5  # rounds 4, 9, 14, 19 change the business day during the burst
SEED = int(os.environ.get("HALLBOX_CRASH_SEED", "20261123"))
KIOSK_CLIENTS = 6
# (staff id, PIN, window): window 1 serves SHMS only, window 7 four services.
STAFF = (("S001", "8001", 1), ("S007", "8007", 7))
SERVICES = ("SHMS", "ZCDJ", "JYXK", "TZJS", "GA", "RS", "SW")
MANAGER = {"authorization": "Bearer demo-manager-token"}
KIOSK = {"authorization": "Bearer demo-kiosk-token"}
READY_TIMEOUT_S = 30.0  # liveness bound only: a loaded CI machine can be slow to import
# How a staff client goes on with the ticket at its window.
P_NO_SHOW, P_TRANSFER_CALLED, P_TRANSFER_SERVING, P_REACTIVATE = 0.2, 0.2, 0.2, 0.5

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
_TERMINAL = ("finished", "transferred", "cancelled")
# An acknowledged operation as its journal event shows it: (type, window, to_ticket).
Acked = tuple[str, int | None, str | None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _libfaketime() -> str:
    # The MT build: the box reads the clock from its loop and its writer thread.
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
                   + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.fail("libfaketime is not installed (`make sysdeps` installs it): the crash test "
                    "moves the box's clock to the next business day with it")
    return found[0]


class BoxClock:
    """The box's wall clock: the real one plus whole days. libfaketime reads the file on every
    call (FAKETIME_NO_CACHE), so a running box sees a change at once, as it would see midnight.
    Monotonic time is left alone: timeouts and sleeps behave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.days = 0
        self._write()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAKETIME")}
        env["LD_PRELOAD"] = " ".join(filter(None, (_libfaketime(), env.get("LD_PRELOAD"))))
        # FORCE_MONOTONIC_FIX (on by default with glibc) makes pthread_cond_timedwait time
        # out late when monotonic time is not faked: every GIL hand-over between the loop and
        # the store's writer thread then takes ~150 ms. Without it, timed waits are exact.
        # (libfaketime 0.9.10 also refuses clock_nanosleep on an absolute monotonic deadline,
        # i.e. time.sleep; the box sleeps only through asyncio, and would fail here loudly.)
        env.update(FAKETIME_TIMESTAMP_FILE=str(self.path), FAKETIME_NO_CACHE="1",
                   FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_FORCE_MONOTONIC_FIX="0")
        return env

    def next_day(self) -> None:
        self.days += 1
        self._write()

    def today(self) -> str:
        """The business day the box's clock shows now."""
        return (datetime.now(HALL_TZ) + timedelta(days=self.days)).date().isoformat()

    def _write(self) -> None:
        # Replaced atomically: a half-written file would read as "no offset", i.e. back a day.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"+{self.days}d\n", encoding="ascii")
        os.replace(tmp, self.path)


class Box:
    """One `hallbox run` subprocess on a fixed data directory, on the clock of `clock`."""

    def __init__(self, data: Path, config: Path, clock: BoxClock) -> None:
        self.data, self.config, self.clock = data, config, clock
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
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=self.clock.env())
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=2, trust_env=False) as c:
            while True:
                if self.proc.poll() is not None:
                    self._forget_shm()
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

    def reap(self) -> int:
        assert self.proc is not None
        code = self.proc.wait(10)
        self._forget_shm()
        return code

    def _forget_shm(self) -> None:
        # libfaketime keeps a semaphore and a shared-memory segment per process and removes
        # them at exit; a killed box cannot, and a later process with its pid would fail.
        assert self.proc is not None
        for name in (f"faketime_shm_{self.proc.pid}", f"sem.faketime_sem_{self.proc.pid}"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._forget_shm()


@dataclass
class Ledger:
    """What clients were told (2xx), across all rounds."""

    # Every ticket issued to a client, by a kiosk or by a transfer: id -> the ticket as told.
    issued: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (ticket, client) -> the operations that client was told happened, in the order told.
    # Per client, because answers to different clients may come in another order than the
    # journal's (a ticket can be called before the kiosk that took it hears back).
    acked: dict[tuple[str, str], list[Acked]] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)  # old id -> new ticket
    counts: Counter[str] = field(default_factory=Counter)  # acknowledged operations by type
    no_show_pool: dict[int, list[str]] = field(default_factory=dict)  # window -> to reactivate
    # window -> the last acknowledged session token; None when a login's answer was lost or
    # came across a day change (it may or may not have survived it).
    sessions: dict[int, str | None] = field(default_factory=dict)
    dead_tokens: list[str] = field(default_factory=list)  # acknowledged before a day change
    logins: int = 0
    unexpected: list[str] = field(default_factory=list)  # 5xx or refusals that make no sense
    ended_by_kill: int = 0  # clients stopped by a transport error (the kill)
    rounds: int = 0
    day: str = ""  # the box's business day after the last restart
    day_changes: int = 0  # rounds whose burst changed the business day
    opened_in_burst: int = 0  # ... whose crashed box had already committed the opening


@dataclass
class Round:
    tickets: set[str] = field(default_factory=set)  # tickets acknowledged in this round
    day_changed: bool = False  # the box's clock is on the next day (from this moment on)

    def ack(self, ledger: Ledger, ticket: str, client: str, event: Acked) -> None:
        ledger.acked.setdefault((ticket, client), []).append(event)
        ledger.counts[event[0]] += 1
        self.tickets.add(ticket)


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
    box = Box(root / "data", config, BoxClock(root / "faketime.rc"))
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


def _day_prefix(day: str) -> str:
    return day.replace("-", "") + "-"


async def _kiosk(c: httpx.AsyncClient, rng: random.Random, ledger: Ledger, rnd: Round) -> None:
    while True:
        body: dict[str, Any] = {"service": rng.choice(SERVICES)}
        # The hall's paired kiosk: anonymous tickets are bounded per address and time.
        headers = KIOSK
        if rng.random() < 0.1:  # green channel needs a kiosk token
            body["priority"] = "green"
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
            rnd.ack(ledger, t["id"], "kiosk", ("ticket.issued", None, None))
        elif r.status_code == 409 and _problem_code(r) == "daily-cap-reached":
            continue
        else:
            ledger.unexpected.append(f"take ticket {body}: {r.status_code} {r.text}")
            return


async def _login(c: httpx.AsyncClient, staff: str, pin: str, window: int,
                 ledger: Ledger, rnd: Round | None = None) -> str | None:
    ledger.sessions[window] = None  # until this login is acknowledged
    before_change = rnd is not None and not rnd.day_changed
    r = await c.post("/api/v1/sessions", json={"staff_id": staff, "pin": pin, "window": window})
    if r.status_code != 201:
        ledger.unexpected.append(f"login {staff}: {r.status_code} {r.text}")
        return None
    token: str = r.json()["token"]
    ledger.logins += 1
    if before_change and rnd is not None and rnd.day_changed:
        # Sent before the day changed, answered after: it ran either before the opening (and
        # the opening ended it) or after; the client cannot know which, so neither is checked.
        return token
    ledger.sessions[window] = token
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


def _session_ended(r: httpx.Response) -> bool:
    """The refusals a day opening gives a window whose session it ended: the session row is
    gone (401) or, until the opening's group is on disk, the window is empty (409)."""
    return r.status_code == 401 or (
        r.status_code == 409 and _problem_code(r) == "window-not-logged-in")


async def _staff(c: httpx.AsyncClient, staff: str, pin: str, window: int, relogin: bool,
                 rng: random.Random, ledger: Ledger, rnd: Round) -> None:
    client = f"w{window}"
    base = f"/api/v1/windows/{window}"
    pool = ledger.no_show_pool.setdefault(window, [])

    def ack(ticket: str, typ: str, to_ticket: str | None = None) -> None:
        rnd.ack(ledger, ticket, client, (typ, window, to_ticket))

    async def take_window(token: str | None) -> tuple[dict[str, str], dict[str, Any] | None]:
        """Log in if needed; the window's current ticket as it is (the last round's answers
        may have been lost)."""
        if token is None:
            raise LookupError
        auth = {"authorization": f"Bearer {token}"}
        r = await c.get(base, headers=auth)
        if r.status_code == 401 and rnd.day_changed:
            token = await _login(c, staff, pin, window, ledger, rnd)
            return await take_window(token)
        if r.status_code != 200:
            ledger.unexpected.append(f"window {window}: {r.status_code} {r.text}")
            raise LookupError
        view = r.json()
        if view["staff"] != staff:
            # Only after a day opening (ours, or a real midnight) is everyone logged out.
            day = _ok_json(await c.get("/api/v1/board"))["day"]
            if not rnd.day_changed and day == ledger.day:
                ledger.unexpected.append(f"window {window} lost {staff} on day {day}: {view}")
                raise LookupError
            token = await _login(c, staff, pin, window, ledger, rnd)
            if token is None:
                raise LookupError
            auth = {"authorization": f"Bearer {token}"}
            view = _ok_json(await c.get(base, headers=auth))
        return auth, view["current"]

    try:
        token = ledger.sessions.get(window)
        if relogin or token is None:
            # Logging in again replaces the session row inside the login's transaction.
            token = await _login(c, staff, pin, window, ledger, rnd)
        try:
            auth, cur = await take_window(token)
        except LookupError:
            return
        ticket, state, service = (cur["id"], cur["state"], cur["service"]) if cur else \
            (None, None, None)
        while True:
            if ticket is None:
                if pool and rng.random() < P_REACTIVATE:
                    # Taken off the pool first: an answer lost to the kill leaves it unknown.
                    tid = pool.pop(rng.randrange(len(pool)))
                    r = await c.post(f"/api/v1/tickets/{tid}/reactivate", json={},
                                     headers=auth)
                    if r.status_code == 200:
                        ack(tid, "ticket.reactivated")
                        continue
                    if r.status_code == 404 and _problem_code(r) == "unknown-ticket":
                        # Only yesterday's tickets are gone from the queue.
                        day = _ok_json(await c.get("/api/v1/board"))["day"]
                        if not tid.startswith(_day_prefix(day)):
                            continue
                else:
                    r = await c.post(f"{base}/call-next", headers=auth)
                    if r.status_code == 200:
                        called = r.json()["called"]
                        if called is None:
                            await asyncio.sleep(0.005)  # nobody waiting for this window yet
                            continue
                        ticket, state, service = called["id"], "called", called["service"]
                        ack(ticket, "ticket.called")
                        continue
            else:
                x = rng.random()
                if state == "called" and x < P_NO_SHOW:
                    r = await c.post(f"{base}/no-show", headers=auth)
                    if r.status_code == 200:
                        ack(ticket, "ticket.no_show")
                        pool.append(ticket)
                        ticket = state = service = None
                        continue
                elif (state == "called" and x < P_NO_SHOW + P_TRANSFER_CALLED) or (
                        state == "serving" and x < P_TRANSFER_SERVING):
                    to = rng.choice([s for s in SERVICES if s != service])
                    r = await c.post(f"{base}/transfer", json={"service": to}, headers=auth)
                    if r.status_code == 200:
                        new = r.json()["new_ticket"]
                        if new["id"] in ledger.issued or new["service"] != to \
                                or new["transferred_from"] != ticket:
                            ledger.unexpected.append(f"transfer of {ticket} to {to}: {new}")
                        ledger.issued[new["id"]] = new
                        ledger.transfers[ticket] = new
                        ack(ticket, "ticket.transferred", new["id"])
                        rnd.ack(ledger, new["id"], client, ("ticket.issued", None, None))
                        ticket = state = service = None
                        continue
                    if r.status_code == 409 and _problem_code(r) == "daily-cap-reached":
                        continue
                elif state == "called":
                    r = await c.post(f"{base}/start", headers=auth)
                    if r.status_code == 200:
                        ack(ticket, "ticket.started")
                        state = "serving"
                        continue
                else:
                    r = await c.post(f"{base}/finish", headers=auth)
                    if r.status_code == 200:
                        ack(ticket, "ticket.finished")
                        ticket = state = service = None
                        continue
            if rnd.day_changed and _session_ended(r):
                # The day opened: the ticket in hand was cancelled and the session ended.
                token = await _login(c, staff, pin, window, ledger, rnd)
                try:
                    auth, cur = await take_window(token)
                except LookupError:
                    return
                ticket, state, service = (cur["id"], cur["state"], cur["service"]) if cur \
                    else (None, None, None)
                continue
            ledger.unexpected.append(f"{staff} at window {window} with {ticket} "
                                     f"({state}): {r.status_code} {r.text}")
            return
    except httpx.TransportError:
        ledger.ended_by_kill += 1


async def _burst(h: CrashHall, rng: random.Random, relogin: bool, day_change: bool) -> Round:
    rnd = Round()
    box, led = h.box, h.ledger
    kill_after = rng.uniform(0.05, 0.4)
    # Half the day changes are killed within 30 ms of the jump (often before the opening's
    # group is on disk), half after 150-400 ms (the opening committed, the new day busy).
    change_at = rng.uniform(0.05, 0.2)
    after = rng.uniform(0.0, 0.03) if led.day_changes % 2 else rng.uniform(0.15, 0.4)

    async def killer() -> None:
        if day_change:
            await asyncio.sleep(change_at)
            # Tokens told before this moment belong to the old day: the opening ends them.
            rnd.day_changed = True
            for window, token in led.sessions.items():
                if token is not None:
                    led.dead_tokens.append(token)
                led.sessions[window] = None
            box.clock.next_day()
            await asyncio.sleep(after)
        else:
            await asyncio.sleep(kill_after)
        box.kill()

    await _ensure_sessions(box.url, led)
    async with contextlib.AsyncExitStack() as stack:
        # Clients are made before the load starts: making one costs tens of ms (TLS context),
        # which would otherwise eat the short bursts.
        clients = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=box.url, timeout=10, trust_env=False))
            for _ in range(KIOSK_CLIENTS + len(STAFF))]
        workers = [_kiosk(clients[i], random.Random(rng.random()), led, rnd)
                   for i in range(KIOSK_CLIENTS)]
        workers += [_staff(clients[KIOSK_CLIENTS + i], s, pin, w, relogin,
                           random.Random(rng.random()), led, rnd)
                    for i, (s, pin, w) in enumerate(STAFF)]
        await asyncio.gather(killer(), *workers)
    return rnd


# ---- the checks ---------------------------------------------------------------------------
def _journal(db: sqlite3.Connection) -> list[tuple[int, str, dict[str, Any]]]:
    return [(seq, typ, json.loads(raw)["data"]) for seq, typ, raw in
            db.execute("SELECT seq, type, envelope FROM journal ORDER BY seq")]


def _tickets(db: sqlite3.Connection) -> dict[str, tuple[dict[str, Any], str]]:
    return {tid: (json.loads(doc), state) for tid, doc, state in
            db.execute("SELECT id, doc, state FROM tickets")}


def _replay(journal: list[tuple[int, str, dict[str, Any]]]) -> dict[str, str]:
    """Each ticket's state according to the journal alone."""
    state: dict[str, str] = {}
    for _, typ, data in journal:
        if typ in _FOLD:
            state[data["ticket"]] = _FOLD[typ]
        elif typ == "day.opened":
            for t in data["cancelled_tickets"]:
                state[t] = "cancelled"
    return state


def _is_subsequence(sub: list[Acked], seq: list[Acked]) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


def _check_day_openings(journal: list[tuple[int, str, dict[str, Any]]],
                        tickets: dict[str, tuple[dict[str, Any], str]]) -> int:
    """Each day opening cancelled exactly the unfinished tickets of the day before, each once;
    returns the seq of the last opening."""
    state: dict[str, str] = {}
    day_of: dict[str, str] = {}
    cancelled: Counter[str] = Counter()
    days: list[str | None] = []
    last = 0
    for seq, typ, data in journal:
        if typ == "ticket.issued":
            day_of[data["ticket"]] = data["day"]
        if typ in _FOLD:
            state[data["ticket"]] = _FOLD[typ]
            if typ == "ticket.cancelled":
                cancelled[data["ticket"]] += 1
        elif typ == "day.opened":
            prev = days[-1] if days else None
            assert data["previous_day"] == prev, f"seq {seq}: {data} after day {prev}"
            assert prev is None or data["day"] > prev, f"seq {seq}: a day opened twice: {data}"
            days.append(data["day"])
            left = sorted(t for t, s in state.items() if s not in _TERMINAL)
            assert all(day_of[t] == prev for t in left), left
            assert sorted(data["cancelled_tickets"]) == left, \
                f"day {data['day']} opened at seq {seq} cancelled {data['cancelled_tickets']}, " \
                f"left open were {left}"
            for t in data["cancelled_tickets"]:
                state[t] = "cancelled"
                cancelled[t] += 1
                doc, table_state = tickets[t]
                assert (table_state, doc["end_reason"]) == ("cancelled", "day_closed"), t
            last = seq
    assert days, "no day was ever opened"
    assert [t for t, n in cancelled.items() if n > 1] == []
    # Nothing of an earlier day is still open.
    assert [t for t, (d, s) in tickets.items() if d["day"] != days[-1] and s not in _TERMINAL] \
        == []
    return last


def _check_database(h: CrashHall) -> None:
    led = h.ledger
    db = sqlite3.connect(f"file:{h.box.db}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tickets = _tickets(db)
        journal = _journal(db)
        sessions = db.execute("SELECT token_sha256, staff, window FROM sessions").fetchall()
        (meta_day,), = db.execute("SELECT value FROM meta WHERE key='day'")
        (n_journal, max_journal), = db.execute("SELECT count(*), max(seq) FROM journal")
        (n_outbox, max_outbox), = db.execute("SELECT count(*), max(seq) FROM outbox")
        orphans = db.execute("SELECT count(*) FROM journal j LEFT JOIN outbox o "
                             "ON o.seq = j.seq WHERE o.seq IS NULL").fetchone()[0]
    finally:
        db.close()

    history: dict[str, list[Acked]] = {}  # ticket -> its events, in journal order
    issued_events: dict[str, list[dict[str, Any]]] = {}
    for _, typ, data in journal:
        if typ in _FOLD:
            history.setdefault(data["ticket"], []).append(
                (typ, data.get("window"), data.get("to_ticket")))
        if typ == "ticket.issued":
            issued_events.setdefault(data["ticket"], []).append(data)

    # Every acknowledged ticket is there, as the client was told, issued exactly once.
    for tid, ack in led.issued.items():
        assert tid in tickets, f"acknowledged ticket {tid} lost"
        doc = tickets[tid][0]
        assert (doc["number"], doc["service"], doc["priority"], doc["source"]) == (
            ack["number"], ack["service"], ack["priority"], ack["source"]), tid
        assert len(issued_events.get(tid, [])) == 1, f"{tid}: {issued_events.get(tid)}"
    # No ticket was issued twice under one id (a reused number would replace a row).
    assert [t for t, evs in issued_events.items() if len(evs) > 1] == []
    numbers = Counter((d["day"], d["service"], d["number"]) for d, _ in tickets.values())
    assert [k for k, n in numbers.items() if n > 1] == []

    # Every acknowledged operation is in the journal, at the window that did it, in the order
    # its client was told of them.
    for (tid, client), acked in led.acked.items():
        assert _is_subsequence(acked, history.get(tid, [])), \
            f"{client} was told {acked} of {tid}; the journal has {history.get(tid)}"
    # A transfer ended the old ticket and issued the new one in the other service.
    for old, new in led.transfers.items():
        odoc, ostate = tickets[old]
        ndoc, _ = tickets[new["id"]]
        assert (ostate, odoc["transferred_to"]) == ("transferred", new["id"]), old
        assert (ndoc["transferred_from"], ndoc["service"]) == (old, new["service"]), new
        assert issued_events[new["id"]][0]["transferred_from"] == old, new

    # The day openings, and that no session from before the last one is left.
    last_opening = _check_day_openings(journal, tickets)
    opened = [d for _, t, d in journal if t == "day.opened"]
    assert meta_day == opened[-1]["day"]
    logged_in_since = {(d["staff"], d["window"]) for seq, t, d in journal
                       if t == "staff.logged_in" and seq > last_opening}
    assert [s for s in sessions if (s[1], s[2]) not in logged_in_since] == [], \
        f"sessions from before the day opened at seq {last_opening}: {sessions}"
    stored = {s[0] for s in sessions}
    assert not stored & {hashlib.sha256(t.encode()).hexdigest() for t in led.dead_tokens}

    # State and journal were written together: replaying the journal gives the table.
    table = {tid: state for tid, (_, state) in tickets.items()}
    assert _replay(journal) == table

    # Every journal row has its outbox row and nothing else is queued.
    assert n_journal == max_journal  # gapless
    assert (n_outbox, max_outbox) == (n_journal, max_journal)
    assert orphans == 0


def _check_api(h: CrashHall, rnd: Round) -> tuple[int, str]:
    """The restarted box serves what is on disk: this round's tickets as stored (today's), or
    not at all (an earlier day's); acknowledged sessions work, ended ones do not."""
    led = h.ledger
    db = sqlite3.connect(f"file:{h.box.db}?mode=ro", uri=True)
    try:
        tickets = _tickets(db)
    finally:
        db.close()
    with httpx.Client(base_url=h.box.url, timeout=10, trust_env=False) as c:
        today = _day_prefix(c.get("/api/v1/board").json()["day"])
        for tid in sorted(rnd.tickets):
            r = c.get(f"/api/v1/tickets/{tid}", headers=MANAGER)
            if not tid.startswith(today):
                assert r.status_code == 404, f"{tid} of an earlier day: {r.text}"
                continue
            assert r.status_code == 200, f"acknowledged ticket {tid}: {r.status_code} {r.text}"
            t = r.json()
            doc, state = tickets[tid]
            assert (t["state"], t["window"], t["number"]) == (state, doc["window"],
                                                              doc["number"]), t
            if tid in led.issued:
                ack = led.issued[tid]
                assert (t["number"], t["service"], t["issued_at"]) == (
                    ack["number"], ack["service"], ack["issued_at"])
        for window, token in led.sessions.items():
            if token is None:
                continue  # the last login's answer was lost: no token is known good
            r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, f"acknowledged session at window {window}: {r.text}"
            assert r.json()["window"] == window
        for token in led.dead_tokens[-2 * len(STAFF):]:
            r = c.get("/api/v1/whoami", headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 401, f"a session from before the day changed: {r.text}"
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


def _box_day(box: Box) -> str:
    with httpx.Client(base_url=box.url, timeout=10, trust_env=False) as c:
        day: str = _ok_json(c.get("/api/v1/board"))["day"]
        return day


def _opened_days(db_path: Path) -> set[str]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return {json.loads(raw)["data"]["day"] for (raw,) in
                db.execute("SELECT envelope FROM journal WHERE type='day.opened'")}
    finally:
        db.close()


@pytest.mark.parametrize("round_no", range(ROUNDS))
def test_sigkill_during_burst_loses_nothing_acknowledged(crash_hall: CrashHall,
                                                          round_no: int) -> None:
    h = crash_hall
    led = h.ledger
    rng = random.Random(SEED * 1000 + round_no)
    if not h.box.running():
        h.box.start()
        led.day = _box_day(h.box)
    day_change = round_no % DAY_CHANGE_EVERY == DAY_CHANGE_EVERY - 1
    rnd = asyncio.run(_burst(h, rng, relogin=round_no % 3 == 0, day_change=day_change))
    assert h.box.reap() == -signal.SIGKILL
    led.rounds += 1
    assert led.unexpected == [], h.box.log_tail()

    # First thing after a crash: is the journal intact as the crash left it?
    v = _hallbox_verify(h.box.db)
    assert v.returncode == 0, f"hallbox verify after SIGKILL: {v.stdout}{v.stderr}"
    assert "intact" in v.stdout
    opened_before_restart = _opened_days(h.box.db)

    expected_day = h.box.clock.today()
    h.box.start()
    day = _box_day(h.box)
    # (A real midnight during the round moves the day too.)
    assert day in (expected_day, h.box.clock.today()), (day, expected_day)
    if day_change:
        assert day > led.day, f"the day did not change: {led.day} -> {day}"
        led.day_changes += 1
        led.opened_in_burst += day in opened_before_restart
    led.day = day

    head = _check_api(h, rnd)
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
        opened = db.execute("SELECT envelope FROM journal WHERE type='day.opened'").fetchall()
    finally:
        db.close()
    cancelled = sum(len(json.loads(raw)["data"]["cancelled_tickets"]) for (raw,) in opened)
    n = led.counts
    # With -s: how much the rounds did; stored - acknowledged = answers the kills cut off.
    print(f"\ncrash rounds {led.rounds}: {len(led.issued)} tickets acknowledged "
          f"({n['ticket.transferred']} by transfer), {stored} stored; "
          f"{n['ticket.called']} calls, {n['ticket.started']} starts, "
          f"{n['ticket.finished']} finishes, {n['ticket.no_show']} no-shows, "
          f"{n['ticket.reactivated']} reactivations, {led.logins} logins acknowledged; "
          f"{led.day_changes} day changes ({led.opened_in_burst} committed before the kill), "
          f"{len(opened)} days opened, {cancelled} leftovers cancelled")
    if led.rounds < ROUNDS:
        pytest.skip("only meaningful after all crash rounds ran")
    assert len(led.issued) >= ROUNDS
    for typ in ("ticket.called", "ticket.started", "ticket.finished", "ticket.no_show",
                "ticket.reactivated", "ticket.transferred"):
        assert n[typ] > 0, f"no {typ} was acknowledged in {ROUNDS} rounds"
    assert led.logins >= 2
    # Every day change opened a day; at least one opening was on disk when the kill came (the
    # others opened on restart), and the openings had leftovers to cancel.
    assert led.day_changes == ROUNDS // DAY_CHANGE_EVERY
    assert len(opened) >= 1 + led.day_changes
    assert led.opened_in_burst >= 1
    assert cancelled > 0
    # Every client ran until the kill cut it off (none stopped early on its own).
    assert led.ended_by_kill == ROUNDS * (KIOSK_CLIENTS + len(STAFF))
