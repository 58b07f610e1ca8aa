"""The hall around the box, in the soak's own process: the devices at the wire and the people.

Devices are the wire simulators of drivers/sim/ (a pty behind a stable symlink per serial line,
the attendance terminal on a loopback port), so they outlive every kill of the box, as real
devices do. People: applicants take tickets at the kiosk (the API with the kiosk token, each
retrying with its Idempotency-Key until it is answered; the kiosk prints on the printer), staff
at odd windows work their caller keypad and at even windows the API from their own window PC
(its own loopback address), applicants rate on the window's 4-key evaluator, staff punch the
attendance terminal, and the centre sends signed display commands.

Everything acknowledged goes into the `Ledger`: a 200/201 ticket, an OK'd key press, a rating
acknowledged with RATE_DONE, a punch the terminal holds, a command the box answered ok. The
checker (check.py) holds the box's journal and the central database against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench.soak import hall as H
from drivers.protocols import keypad as kp
from drivers.protocols import zk
from drivers.sim.board import BoardBusSim
from drivers.sim.evaluator_keys import EvaluatorKeysSim
from drivers.sim.keypad import KeypadBusSim
from drivers.sim.printer import PrinterSim
from drivers.sim.r30x import R30xSim
from drivers.sim.zk_terminal import ZkTerminalSim

KIOSK = {"Authorization": f"Bearer {H.KIOSK_TOKEN}"}
SERIAL = ["printer-kiosk-1", "rs485-boards", "rs485-keypads", "rs485-eval", "zk-entrance",
          "fp-w1", "fp-w2"]


@dataclass
class Ledger:
    tickets: dict[str, str] = field(default_factory=dict)  # ticket id -> number, acknowledged
    anonymous_tickets: dict[str, str] = field(default_factory=dict)  # from the hostile flood
    key_ops: list[tuple[int, str, float, float]] = field(default_factory=list)  # window, op, t0, t1
    api_ops: list[tuple[int, str, str]] = field(default_factory=list)  # window, op, ticket id
    ratings: list[tuple[int, str, int]] = field(default_factory=list)  # window, number, key
    commands: list[str] = field(default_factory=list)  # command ids answered ok
    forged: list[str] = field(default_factory=list)  # ids that must have no effect
    replayed: list[str] = field(default_factory=list)  # ids sent again: one effect only
    punch_attempts: int = 0
    arrivals: int = 0
    kiosk_retries: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class Devices:
    def __init__(self, plan: H.HallPlan) -> None:
        d, n = plan.dev_dir, plan.windows
        self.printer = PrinterSim(d, "printer-kiosk-1")
        self.printer.paper_file = None
        self.boards = BoardBusSim(d, "rs485-boards", {254: "bx5", **{
            w: "bx5" if w % 2 else "at" for w in range(1, n + 1)}})
        self.keypads = KeypadBusSim(d, "rs485-keypads", list(range(1, n + 1)))
        self.evals = EvaluatorKeysSim(d / "rs485-eval", [H.EVAL_BASE + w for w in range(1, n + 1)])
        users = [zk.ZkUser(i, H.user_id(f"S{i:03d}"), f"员工{i}") for i in range(1, 2 * n + 1)]
        self.zk = ZkTerminalSim(users, port=plan.attendance_port)
        self.fps = {f"fp-w{w}": R30xSim(d / f"fp-w{w}") for w in (1, 2)}
        self.serial_sims: dict[str, Any] = {"rs485-boards": self.boards,
                                            "rs485-keypads": self.keypads,
                                            "rs485-eval": self.evals, **self.fps}

    async def start(self) -> None:
        await self.printer.start()
        for s in self.serial_sims.values():
            await s.start()
        await self.zk.start()

    async def stop(self) -> None:
        await self.printer.stop()
        for s in self.serial_sims.values():
            await s.stop()
        await self.zk.stop()

    async def unplug(self, dev: str) -> None:
        if dev == "printer-kiosk-1":
            await self.printer.unplug()
        elif dev == "zk-entrance":
            await self.zk.unplug()
        else:
            self.serial_sims[dev].unplug()

    async def plug(self, dev: str) -> None:
        if dev == "printer-kiosk-1":
            await self.printer.plug()
        elif dev == "zk-entrance":
            await self.zk.replug()
        else:
            self.serial_sims[dev].plug()

    def garbage(self, dev: str, rng: random.Random) -> int:
        """Malformed frames from a device to the box: noise, a truncated frame, a frame with a
        bad checksum, an unknown function. Returns the bytes written."""
        noise = rng.randbytes(rng.randint(5, 200))
        if dev in ("rs485-keypads", "rs485-eval"):
            addr = rng.randint(1, 250)
            good = kp.encode(kp.KeypadFrame(addr, 0x7E, b"\x00"))  # an unknown function
            bad = bytearray(kp.encode(kp.KeypadFrame(addr, kp.Func.KEY_CALL, b"")))
            bad[-2] ^= 0xFF  # broken checksum
            data = noise + bytes(bad) + good[: len(good) // 2] + noise[:7] + good
            sim = self.keypads if dev == "rs485-keypads" else self.evals
            sim.port.write(data)
        elif dev == "printer-kiosk-1":
            data = noise
            self.printer.port.write(data)
        else:
            data = noise
            self.serial_sims[dev].port.write(data)
        return len(data)


async def _key(pads: KeypadBusSim, addr: int, func: int, data: bytes = b"",
               timeout: float = 8.0) -> int | None:
    """Press a key; the status of the first acknowledgement for it, None without one."""
    before = len(pads.acks[addr])
    pads.press(addr, func, data)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f, status in pads.acks[addr][before:]:
            if f == func:
                return status
        await asyncio.sleep(0.05)
    return None


class Load:
    """Applicants, staff and the centre, seeded; everything acknowledged goes to the ledger."""

    def __init__(self, plan: H.HallPlan, url: str, devices: Devices, ledger: Ledger,
                 rng: random.Random, *, tickets: int, seconds: float, services: list[str],
                 window_services: dict[int, list[str]], send_command: Any) -> None:
        self.plan, self.url, self.dev, self.ledger = plan, url, devices, ledger
        self.rng = rng
        self.tickets, self.seconds = tickets, seconds
        self.services, self.window_services = services, window_services
        self.send_command = send_command
        self.running = True
        self.tasks: list[asyncio.Task[None]] = []
        self.tz = ZoneInfo("Asia/Shanghai")
        self.last_punch: dict[str, float] = {}
        self.errors: dict[str, int] = {}

    def _err(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self._arrivals()))
        for staff, w in self.plan.staff:
            rng = random.Random(self.rng.random())
            if w % 2:
                self.tasks.append(asyncio.create_task(self._keypad_window(staff, w, rng)))
            else:
                self.tasks.append(asyncio.create_task(self._api_window(staff, w, rng)))
        self.tasks.append(asyncio.create_task(self._punches(random.Random(self.rng.random()))))
        self.tasks.append(asyncio.create_task(self._centre(random.Random(self.rng.random()))))

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # ---- applicants ---------------------------------------------------------------------------
    async def _arrivals(self) -> None:
        rate = self.tickets / self.seconds
        rng = random.Random(self.rng.random())
        t0 = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=10, trust_env=False) as c:
            pending: set[asyncio.Task[None]] = set()
            for i in range(self.tickets):
                if not self.running:
                    break
                # Arrivals on schedule, each applicant on their own (retrying) at the kiosk.
                due = t0 + i / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                t = asyncio.create_task(self._applicant(c, rng.choice(self.services),
                                                        f"soak-{i:06d}-{secrets.token_hex(4)}"))
                pending.add(t)
                t.add_done_callback(pending.discard)
            while pending and self.running:
                await asyncio.sleep(0.2)

    async def _applicant(self, c: httpx.AsyncClient, service: str, key: str) -> None:
        self.ledger.arrivals += 1
        for attempt in range(200):
            if not self.running:
                return
            try:
                r = await c.post("/api/v1/tickets", json={"service": service},
                                 headers={**KIOSK, "Idempotency-Key": key})
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code in (200, 201):
                body = r.json()
                self.ledger.tickets[body["id"]] = body["number"]
                return
            if r is not None and r.status_code < 500 and r.status_code not in (408, 429):
                self._err(f"ticket {r.status_code}")
                return
            if attempt:
                self.ledger.kiosk_retries += 1
            await asyncio.sleep(1.0)

    # ---- staff ---------------------------------------------------------------------------------
    async def _serve_time(self, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(2.0, 9.0))

    async def _rate(self, w: int, number: str, rng: random.Random) -> None:
        """The applicant rates on the window's evaluator once it asks (most do)."""
        if rng.random() < 0.15:
            return
        addr = H.EVAL_BASE + w
        got = self.dev.evals.received[addr]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(f.func == kp.Func.RATE_PROMPT and f.data.decode("ascii", "replace") == number
                   for f in got[-6:]):
                break
            await asyncio.sleep(0.1)
        else:
            return
        key = rng.choice([1, 1, 1, 2, 2, 3, 4])
        before = len(got)
        self.dev.evals.press(addr, key)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for f in got[before:]:
                if f.func == kp.Func.RATE_DONE:
                    self.ledger.ratings.append((w, number, key))
                    return
                if f.func == kp.Func.ACK and len(f.data) == 2 and f.data[1] != kp.AckStatus.OK:
                    return
            await asyncio.sleep(0.05)

    async def _keypad_window(self, staff: str, w: int, rng: random.Random) -> None:
        pads = self.dev.keypads
        await asyncio.sleep(rng.uniform(0, 5))
        logged = False
        while self.running:
            if not logged:
                st = await _key(pads, w, kp.Func.KEY_LOGIN, f"{staff}:{H.PIN}".encode())
                logged = st == kp.AckStatus.OK
                if not logged:
                    await asyncio.sleep(2)
                    continue
                self._punch(staff, 0)
            t0 = time.time()
            st = await _key(pads, w, kp.Func.KEY_CALL)
            if st is None:
                await asyncio.sleep(3)  # the box is away: let a late answer pass
                continue
            if st != kp.AckStatus.OK:
                # Nobody waiting, or a ticket still in hand (its finish was lost to a kill):
                # staff finish what the pad shows before calling again.
                t0 = time.time()
                if await _key(pads, w, kp.Func.KEY_FINISH) == kp.AckStatus.OK:
                    self.ledger.key_ops.append((w, "finish", t0, time.time()))
                await asyncio.sleep(1.0)
                continue
            self.ledger.key_ops.append((w, "call", t0, time.time()))
            await asyncio.sleep(0.2)
            number = pads.display.get(w, (0, "", ""))[1]
            roll = rng.random()
            if roll < 0.07:
                op, func, data = "noshow", kp.Func.KEY_NO_SHOW, b""
            elif roll < 0.13:
                other = [s for s in self.services if s not in self.window_services[w]]
                op, func, data = "transfer", kp.Func.KEY_TRANSFER, rng.choice(other).encode()
            else:
                await self._serve_time(rng)
                op, func, data = "finish", kp.Func.KEY_FINISH, b""
            t0 = time.time()
            st = await _key(pads, w, func, data)
            if st == kp.AckStatus.OK:
                self.ledger.key_ops.append((w, op, t0, time.time()))
                if op == "finish" and number:
                    await self._rate(w, number, rng)
            elif st is None:
                await asyncio.sleep(3)

    async def _api_window(self, staff: str, w: int, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, 5))
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.1.{w}")
        async with httpx.AsyncClient(base_url=self.url, timeout=10, trust_env=False,
                                     transport=transport) as c:
            token: str | None = None
            while self.running:
                try:
                    if token is None:
                        r = await c.post("/api/v1/sessions", json={
                            "staff_id": staff, "pin": H.PIN, "window": w})
                        if r.status_code == 201:
                            token = r.json()["token"]
                            self._punch(staff, 0)
                        else:
                            self._err(f"login {r.status_code}")
                            await asyncio.sleep(3)
                        continue
                    auth = {"Authorization": f"Bearer {token}"}
                    r = await c.post(f"/api/v1/windows/{w}/call-next", headers=auth)
                    if r.status_code == 401:
                        token = None
                        continue
                    if r.status_code == 409:
                        await self._finish_in_hand(c, w, auth)
                        await asyncio.sleep(1.0)
                        continue
                    if r.status_code != 200:
                        await asyncio.sleep(1.0)
                        continue
                    body = r.json()
                    t = body.get("called")
                    if not t:
                        await asyncio.sleep(1.0)
                        continue
                    self.ledger.api_ops.append((w, "call", t["id"]))
                    roll = rng.random()
                    if roll < 0.07:
                        op, path, js = "no_show", "no-show", None
                    elif roll < 0.13:
                        other = [s for s in self.services if s not in self.window_services[w]]
                        op, path, js = "transfer", "transfer", {"service": rng.choice(other)}
                    else:
                        r = await c.post(f"/api/v1/windows/{w}/start", headers=auth)
                        if r.status_code == 200:
                            self.ledger.api_ops.append((w, "start", t["id"]))
                        await self._serve_time(rng)
                        op, path, js = "finish", "finish", None
                    r = await c.post(f"/api/v1/windows/{w}/{path}", headers=auth, json=js)
                    if r.status_code == 200:
                        self.ledger.api_ops.append((w, op, t["id"]))
                        if op == "finish":
                            await self._rate(w, t["number"], rng)
                except httpx.HTTPError:
                    await asyncio.sleep(2)

    async def _finish_in_hand(self, c: httpx.AsyncClient, w: int, auth: dict[str, str]) -> None:
        """A ticket still in hand (its finish was lost to a kill): start it if need be and
        finish it, as staff would, before calling again."""
        r = await c.get(f"/api/v1/windows/{w}", headers=auth)
        cur = r.json().get("current") if r.status_code == 200 else None
        if not cur:
            return
        if cur["state"] == "called":
            r = await c.post(f"/api/v1/windows/{w}/start", headers=auth)
            if r.status_code == 200:
                self.ledger.api_ops.append((w, "start", cur["id"]))
        r = await c.post(f"/api/v1/windows/{w}/finish", headers=auth)
        if r.status_code == 200:
            self.ledger.api_ops.append((w, "finish", cur["id"]))

    # ---- attendance ----------------------------------------------------------------------------
    def _punch(self, staff: str, kind: int) -> None:
        """A finger on the terminal: at most one a second per person (the terminal's clock)."""
        uid = H.user_id(staff)
        now = time.time()
        if now - self.last_punch.get(uid, 0) < 1.5:
            return
        self.last_punch[uid] = now
        self.ledger.punch_attempts += 1
        with contextlib.suppress(RuntimeError):  # a terminal a client disabled identifies nobody
            self.dev.zk.punch(uid, datetime.now(self.tz).replace(tzinfo=None), punch=kind)

    async def _punches(self, rng: random.Random) -> None:
        people = [s for s, _ in self.plan.staff] + self.plan.bystanders
        while self.running:
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            self._punch(rng.choice(people), rng.choice([0, 1, 2, 3]))

    # ---- the centre ------------------------------------------------------------------------------
    async def _centre(self, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        i = 0
        while self.running:
            await asyncio.sleep(rng.uniform(3, 8))
            i += 1
            from edge.link import protocol as P

            cmd = P.make_command(H.COMMAND_KEY, H.SITE, H.BOX, "display.message",
                                 {"text": f"通知 {i}", "seconds": 30, "target": "main"})
            reply = await loop.run_in_executor(None, lambda c=cmd: self.send_command(
                "display.message", c))
            if reply and reply.get("ok"):
                self.ledger.commands.append(cmd["id"])
                self.last_good_command = cmd


def window_services(cfg: Any) -> dict[int, list[str]]:
    out = {}
    for w in cfg.windows:
        out[w.number] = [s.service for s in w.services]
    return out

