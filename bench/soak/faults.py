"""The fault injector: a seeded schedule in which every fault class comes at least `min_each`
times, each fault logged (JSON line: wall time, class, parameters, how long it lasted).

Two lanes run side by side, each one fault at a time: the hall lane (box, broker, link,
devices, disk, hostile traffic) and the camera lane (a camera source stalled or killed). A
lane's faults are spread evenly over the fault period in a seeded shuffled order, so the same
SOAK_SEED gives the same faults in the same order with the same parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.soak import hall as H

HALL_LANE = ["box_kill", "broker_restart", "link_cut", "serial_unplug", "disk_fill",
             "malformed_frames", "forged_commands", "hostile_api"]
CAMERA_LANE = ["camera_stall", "camera_kill"]
CLASSES = HALL_LANE + CAMERA_LANE


@dataclass
class Fault:
    cls: str
    start: float
    end: float
    params: dict[str, Any]

    def line(self) -> str:
        return json.dumps({"at": round(self.start, 3), "class": self.cls,
                           "seconds": round(self.end - self.start, 3), **self.params},
                          ensure_ascii=False)


@dataclass
class Injector:
    rng: random.Random
    log: Path
    min_each: int
    world: Any  # run.Soak: the parts the faults act on
    faults: list[Fault] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # a burst the box did not survive
    running: bool = True

    def plan(self, lane: list[str], extra: float = 0.15) -> list[str]:
        order = [c for c in lane for _ in range(self.min_each)]
        order += [self.rng.choice(lane) for _ in range(int(len(order) * extra))]
        self.rng.shuffle(order)
        return order

    async def run_lane(self, order: list[str], seconds: float) -> None:
        rng = random.Random(self.rng.random())
        t0 = time.monotonic()
        step = seconds / max(1, len(order))
        for i, cls in enumerate(order):
            due = t0 + i * step + rng.uniform(0, step * 0.3)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not self.running:
                return
            start = time.time()
            try:
                params = await getattr(self, cls)(rng)
            except Exception as e:  # a fault that could not be injected is reported, not hidden
                params = {"error": f"{type(e).__name__}: {e}"}
                self.problems.append(f"{cls}: {params['error']}")
            f = Fault(cls, start, time.time(), params)
            self.faults.append(f)
            with self.log.open("a", encoding="utf-8") as out:
                out.write(f.line() + "\n")

    def counts(self) -> Counter[str]:
        return Counter(f.cls for f in self.faults if "error" not in f.params)

    # ---- the hall lane -----------------------------------------------------------------------
    async def box_kill(self, rng: random.Random) -> dict[str, Any]:
        box = self.world.box
        await asyncio.sleep(rng.uniform(0, 1))
        pid = box.proc.pid if box.proc else None
        box.kill()
        t = time.monotonic()
        ok = await self.world.wait_box_back(120)
        return {"pid": pid, "back": ok, "back_after_s": round(time.monotonic() - t, 2)}

    async def broker_restart(self, rng: random.Random) -> dict[str, Any]:
        import signal

        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        down = rng.uniform(0.5, 4.0)
        b = self.world.broker
        await asyncio.to_thread(b.stop, sig)
        await asyncio.sleep(down)
        await asyncio.to_thread(b.start)
        return {"signal": signal.Signals(sig).name, "down_s": round(down, 2)}

    async def link_cut(self, rng: random.Random) -> dict[str, Any]:
        down = rng.uniform(2.0, 12.0)
        b = self.world.broker
        await asyncio.to_thread(b.cut_link)
        try:
            await asyncio.sleep(down)
        finally:
            await asyncio.to_thread(b.mend_link)
        return {"netns": b.name, "veth": b.hall_if, "down_s": round(down, 2)}

    async def serial_unplug(self, rng: random.Random) -> dict[str, Any]:
        from bench.soak.world import SERIAL

        devs = self.world.devices
        # Round the devices so each is pulled, in a seeded order.
        if not getattr(self, "_serial_order", None):
            self._serial_order = SERIAL.copy()
            rng.shuffle(self._serial_order)
        dev = self._serial_order.pop()
        away = rng.uniform(0.5, 6.0)
        await devs.unplug(dev)
        try:
            await asyncio.sleep(away)
        finally:
            await devs.plug(dev)
        return {"device": dev, "away_s": round(away, 2)}

    async def disk_fill(self, rng: random.Random) -> dict[str, Any]:
        """Fill the recordings disk to just above the box's free-space floor (near its
        recording limit); recording must go on, nothing may be lost; then free it again."""
        folder = self.world.recordings
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
        floor = int(self.world.plan.free_floor_gb * 1024**3)
        margin = rng.randint(24, 40) * 1024**2
        size = max(0, free - floor - margin)
        filler = folder / f"soak-filler-{secrets.token_hex(3)}.bin"
        hold = rng.uniform(6.0, 15.0)
        await asyncio.to_thread(_fill, filler, size)
        st = os.statvfs(folder)
        left = st.f_bavail * st.f_frsize
        try:
            await asyncio.sleep(hold)
        finally:
            filler.unlink(missing_ok=True)
        return {"filler_mb": size // 1024**2, "free_left_mb": left // 1024**2,
                "floor_mb": floor // 1024**2, "hold_s": round(hold, 2)}

    async def malformed_frames(self, rng: random.Random) -> dict[str, Any]:
        from bench.soak.world import SERIAL

        devs = [d for d in SERIAL if d != "zk-entrance"]
        sent = {}
        for _ in range(rng.randint(2, 5)):
            d = rng.choice(devs)
            sent[d] = sent.get(d, 0) + self.world.devices.garbage(d, rng)
            await asyncio.sleep(rng.uniform(0.05, 0.5))
        return {"bytes": sent}

    async def forged_commands(self, rng: random.Random) -> dict[str, Any]:
        from edge.link import protocol as P

        sent: dict[str, Any] = {}
        send = self.world.send_command
        args = {"text": "伪造", "seconds": 30, "target": "main"}
        bad_sig = P.make_command("not-the-key-" + secrets.token_hex(8), H.SITE, H.BOX,
                                 "display.message", args)
        self.world.ledger.forged.append(bad_sig["id"])
        from datetime import UTC, datetime, timedelta

        old = P.make_command(H.COMMAND_KEY, H.SITE, H.BOX, "display.message", args,
                             now=datetime.now(UTC) - timedelta(hours=2))
        self.world.ledger.forged.append(old["id"])
        tries: list[tuple[str, Any]] = [("bad-json", b"{not json" + rng.randbytes(8)),
                                        ("bad-signature", bad_sig), ("expired", old)]
        last = getattr(self.world.load, "last_good_command", None)
        if last is not None:
            self.world.ledger.replayed.append(last["id"])
            tries.append(("replayed", last))
        for kind, payload in tries:
            reply = await asyncio.to_thread(send, "display.message", payload, 4.0)
            sent[kind] = (reply or {}).get("error", {}).get("code") if reply else "no reply"
            if reply and reply.get("ok") and kind != "replayed":
                self.problems.append(f"forged command accepted: {kind}")
        return sent

    async def hostile_api(self, rng: random.Random) -> dict[str, Any]:
        url = self.world.box.url
        addr = f"127.0.2.{rng.randint(1, 250)}"
        codes: Counter[str] = Counter()
        transport = httpx.AsyncHTTPTransport(local_address=addr)
        kiosk = {"Authorization": f"Bearer {H.KIOSK_TOKEN}"}

        async def hit(kind: str, coro: Awaitable[httpx.Response]) -> None:
            try:
                r = await coro
                codes[f"{kind}:{r.status_code}"] += 1
                if kind == "anonymous-ticket" and r.status_code == 201:
                    body = r.json()
                    self.world.ledger.anonymous_tickets[body["id"]] = body["number"]
            except httpx.HTTPError as e:
                codes[f"{kind}:{type(e).__name__}"] += 1

        async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False,
                                     transport=transport) as c:
            big = b'{"service": "GA", "pad": "' + b"x" * rng.randint(70_000, 400_000) + b'"}'
            await hit("oversized", c.post("/api/v1/tickets", content=big,
                                          headers={**kiosk, "content-type": "application/json"}))
            await hit("bad-json", c.post("/api/v1/tickets", content=b'{"service": ',
                                         headers={**kiosk, "content-type": "application/json"}))
            for _ in range(rng.randint(5, 20)):
                await hit("bad-token", c.get("/api/v1/stats", headers={
                    "Authorization": f"Bearer {secrets.token_hex(16)}"}))
            victim = rng.choice(self.world.plan.bystanders)
            for _ in range(rng.randint(6, 9)):
                await hit("pin-guess", c.post("/api/v1/sessions", json={
                    "staff_id": victim, "pin": f"{rng.randint(0, 9999):04d}", "window": 1}))
            await asyncio.gather(*[hit("anonymous-ticket", c.post(
                "/api/v1/tickets", json={"service": rng.choice(["GA", "SW", "RS"])}))
                for _ in range(rng.randint(8, 20))])
        streams: list[Any] = []
        n_streams = rng.randint(30, 120)
        async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False,
                                     limits=httpx.Limits(max_connections=500),
                                     transport=httpx.AsyncHTTPTransport(
                                         local_address=addr,
                                         limits=httpx.Limits(max_connections=500))) as c:
            async def stream() -> None:
                try:
                    async with c.stream("GET", "/api/v1/board/stream") as r:
                        codes[f"stream:{r.status_code}"] += 1
                        with contextlib.suppress(Exception):
                            async for _chunk in r.aiter_bytes():
                                break
                        await asyncio.sleep(rng.uniform(1, 3))
                except httpx.HTTPError as e:
                    codes[f"stream:{type(e).__name__}"] += 1
            streams = [asyncio.create_task(stream()) for _ in range(n_streams)]
            await asyncio.gather(*streams)
        cap = self.world.cfg.api.tickets.anonymous_per_address
        if codes["anonymous-ticket:201"] > cap:
            self.problems.append(f"anonymous flood from {addr} got "
                                 f"{codes['anonymous-ticket:201']} tickets (limit {cap})")
        serving = await self.world.box_serves()
        if not serving:
            self.problems.append(f"box not serving after hostile traffic from {addr}")
        if any(k.endswith(":500") for k in codes):
            self.problems.append(f"5xx answers to hostile traffic: {dict(codes)}")
        return {"from": addr, "streams": n_streams, "codes": dict(sorted(codes.items())),
                "serving_after": serving}

    # ---- the camera lane -----------------------------------------------------------------------
    def _camera(self, rng: random.Random) -> str:
        """A camera not faulted in the last 45 s (so each fault is its own outage)."""
        recent = {f.params.get("camera") for f in self.faults
                  if f.cls in CAMERA_LANE and time.time() - f.end < 45}
        free = sorted(set(self.world.cameras) - recent) or sorted(self.world.cameras)
        return rng.choice(free)

    async def camera_stall(self, rng: random.Random) -> dict[str, Any]:
        cam = self._camera(rng)
        src = self.world.cameras[cam]
        hold = rng.uniform(10.0, 16.0)
        src.pause()
        try:
            await asyncio.sleep(hold)
        finally:
            src.resume()
        return {"camera": cam, "stalled_s": round(hold, 2)}

    async def camera_kill(self, rng: random.Random) -> dict[str, Any]:
        cam = self._camera(rng)
        src = self.world.cameras[cam]
        away = rng.uniform(3.0, 9.0)
        assert src.proc is not None
        with contextlib.suppress(ProcessLookupError):
            src.proc.kill()
        await asyncio.to_thread(src.proc.wait, 10)
        await asyncio.sleep(away)
        src.proc = None
        await src.start()
        return {"camera": cam, "away_s": round(away, 2)}


def _fill(path: Path, size: int) -> None:
    chunk = b"\0" * (4 * 1024 * 1024)
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n

