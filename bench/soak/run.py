"""The soak run: start everything, run the compressed day under the fault injector, settle,
collect the evidence, print the verdict. See docs/soak.md.

Hall clock: the box runs on the real clock (with --ignore-hours); the day is compressed in its
load, not its clock: SOAK_MINUTES of wall time carry a day's tickets (SOAK_TICKETS, default
165 a minute: 3,300 in the default 20 minutes) over SOAK_WINDOWS windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench.boxproc import free_port, raise_nofile
from bench.soak import check as C
from bench.soak import hall as H
from bench.soak.faults import CAMERA_LANE, CLASSES, HALL_LANE, Injector
from bench.soak.parts import CentralDb, Ingest, NetnsBroker, SupervisedBox
from bench.soak.world import Devices, Ledger, Load, window_services

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
MANAGER = {"Authorization": f"Bearer {H.MANAGER_TOKEN}"}


class Soak:
    def __init__(self, *, seed: int, minutes: float, windows: int, cameras: int, tickets: int,
                 min_each: int, keep: bool, run_dir: Path) -> None:
        self.seed, self.minutes, self.windows, self.n_cameras = seed, minutes, windows, cameras
        self.tickets, self.min_each, self.keep = tickets, min_each, keep
        self.dir = run_dir
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.crashes: list[str] = []
        self.cameras: dict[str, Any] = {}
        self.mounted = False

    def say(self, msg: str) -> None:
        print(f"[soak {datetime.now():%H:%M:%S}] {msg}", flush=True)

    # ---- helpers the faults use -------------------------------------------------------------
    def send_command(self, name: str, payload: Any, timeout: float = 8.0) -> dict[str, Any] | None:
        from edge.central.client import CentralBroker, send_command

        try:
            return send_command(CentralBroker(self.broker.central_url()), H.COMMAND_KEY, H.SITE,
                                H.BOX, name, None, timeout=timeout, payload=payload)
        except Exception:
            return None

    async def wait_box_back(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            life = self.box.lives[-1]
            if life.ready is not None and not life.how and self.box.proc \
                    and self.box.proc.poll() is None:
                return True
            await asyncio.sleep(0.2)
        return False

    async def box_serves(self) -> bool:
        """/healthz answers and a kiosk ticket is issued (and goes into the ledger)."""
        await self.wait_box_back(60)
        key = f"soak-probe-{secrets.token_hex(6)}"
        async with httpx.AsyncClient(base_url=self.box.url, timeout=10, trust_env=False) as c:
            for _ in range(20):
                try:
                    if (await c.get("/healthz")).status_code == 200:
                        r = await c.post("/api/v1/tickets", json={"service": "GA"}, headers={
                            "Authorization": f"Bearer {H.KIOSK_TOKEN}", "Idempotency-Key": key})
                        if r.status_code in (200, 201):
                            self.ledger.tickets[r.json()["id"]] = r.json()["number"]
                            return True
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(1)
        return False

    async def supervise(self) -> None:
        """Restart=always, RestartSec=1: the systemd unit's policy, for the box process."""
        while self.supervising:
            self.box.sample()
            rc = self.box.exited_unasked()
            if rc is not None:
                self.crashes.append(f"exit {rc} at {datetime.now():%H:%M:%S}")
                self.say(f"box died unasked (rc={rc}); see {self.box.log}")
            p = self.box.proc
            if self.box.wanted and p is not None and p.poll() is not None:
                await asyncio.sleep(self.box.restart_delay_s)
                self.box.spawn()
                if not await asyncio.to_thread(self.box.wait_ready, 120):
                    self.say("box did not come back within 120 s")
            await asyncio.sleep(0.5)

    # ---- setup ---------------------------------------------------------------------------------
    async def setup(self) -> None:
        from drivers.sim.camera import RtspSource, prepare_clip

        self.dir.mkdir(parents=True, exist_ok=True)
        raise_nofile(8192)
        data = self.dir / "data"
        self.recordings = data / "recordings"
        self.recordings.mkdir(parents=True, exist_ok=True)
        # The recording disk: a tmpfs of its own, so "disk full" is this disk only.
        mb = 300 + int(self.n_cameras * self.minutes * 60 * 0.06) + 260
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "soak-recordings",
                        str(self.recordings)], check=True)
        self.mounted = True
        clip, _jpeg = await asyncio.to_thread(prepare_clip, ROOT / "var" / "soak-clips")
        for i in range(1, self.n_cameras + 1):
            src = RtspSource(clip, [f"cam-w{i}"], fps=10)
            self.cameras[f"cam-w{i}"] = src
            await src.start()
        self.broker = NetnsBroker(self.dir / "broker", port=18830 + secrets.randbelow(1000))
        self.broker.dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.broker.create)
        await asyncio.to_thread(self.broker.start)
        self.db = CentralDb()
        await asyncio.to_thread(self.db.create)
        self.ingest = Ingest(self.dir, self.broker.central_url(), self.db.dsn, H.COMMAND_KEY)
        self.ingest.start()
        self.plan = H.HallPlan(self.windows, self.n_cameras, self.dir / "dev", free_port(),
                               {c: s.url(c) for c, s in self.cameras.items()},
                               self.broker.hall_url())
        self.cfg = H.build(self.plan)
        config = H.write(self.cfg, self.dir / "hall.toml")
        self.devices = Devices(self.plan)
        await self.devices.start()
        self.box = SupervisedBox(config, data, self.dir / "box.log")
        self.box.spawn()
        if not await asyncio.to_thread(self.box.wait_ready, 120):
            raise RuntimeError(f"the box did not start: {self.box.log.read_text()[-3000:]}")
        self.supervising = True
        self.say(f"up: box {self.box.url}, broker {self.broker.hall_url()} in netns "
                 f"{self.broker.name}, central {self.db.name}, {len(self.cameras)} cameras, "
                 f"run dir {self.dir}")

    async def teardown(self) -> None:
        self.supervising = False
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.box.stop)
        with contextlib.suppress(Exception):
            self.ingest.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.broker.destroy)
        with contextlib.suppress(Exception):
            await self.devices.stop()
        for src in self.cameras.values():
            with contextlib.suppress(Exception):
                await src.stop()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.recordings)], check=False)
        if not self.keep:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.db.drop)

    # ---- the day ---------------------------------------------------------------------------------
    async def day(self) -> None:
        total = self.minutes * 60
        load_s = max(60.0, total - 45)
        self.t_load0 = time.time()
        self.load = Load(self.plan, self.box.url, self.devices, self.ledger,
                         random.Random(self.rng.random()), tickets=self.tickets,
                         seconds=load_s * 0.92, services=[s.code for s in self.cfg.services],
                         window_services=window_services(self.cfg),
                         send_command=self.send_command)
        self.injector = Injector(random.Random(self.rng.random()), self.dir / "faults.jsonl",
                                 self.min_each, self)
        sup = asyncio.create_task(self.supervise())
        self.load.start()
        fault_s = load_s - 40
        hall_order = self.injector.plan(HALL_LANE)
        cam_order = self.injector.plan(CAMERA_LANE)
        self.say(f"load for {load_s:.0f} s; {len(hall_order)} hall faults and "
                 f"{len(cam_order)} camera faults over {fault_s:.0f} s")

        async def lane(order: list[str]) -> None:
            await asyncio.sleep(15)
            await self.injector.run_lane(order, fault_s - 15)
        lanes = [asyncio.create_task(lane(hall_order)), asyncio.create_task(lane(cam_order))]
        ticker = asyncio.create_task(self._progress())
        await asyncio.sleep(load_s)
        self.injector.running = False
        await asyncio.gather(*lanes)
        await self.load.stop()
        ticker.cancel()
        self.t_load1 = time.time()
        self.say("load and faults done; settling")
        await self.wait_box_back(120)
        self.serving = await self.box_serves()
        await asyncio.sleep(8)  # live punches, last ratings, the outbox
        self.evidence_live = await self.collect_live()
        self.supervising = False
        await sup

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(60)
            c = self.injector.counts()
            self.say(f"tickets acked {len(self.ledger.tickets)}, faults {sum(c.values())}: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))

    # ---- the evidence ------------------------------------------------------------------------
    async def head(self) -> int:
        async with httpx.AsyncClient(base_url=self.box.url, timeout=10, trust_env=False) as c:
            return int((await c.get("/healthz")).json()["seq"])

    async def box_stats(self, d0: date, d1: date) -> dict[str, Any]:
        from edge.domain import stats

        out = {}
        async with httpx.AsyncClient(base_url=self.box.url, timeout=30, trust_env=False) as c:
            for by in stats.DIMENSIONS:
                r = await c.get(f"/api/v1/stats?from={d0}&to={d1}&by={by}", headers=MANAGER)
                r.raise_for_status()
                out[by] = r.json()
        return out

    def central_stats(self, d0: date, d1: date) -> dict[str, Any]:
        from edge.domain import stats

        out = {}
        for by in stats.DIMENSIONS:
            r = subprocess.run([sys.executable, "-m", "edge.cli", "central", "stats", "--db",
                                self.db.dsn, f"{H.SITE}/{H.BOX}", "--from", str(d0), "--to",
                                str(d1), "--by", by], cwd=ROOT, capture_output=True, text=True,
                               check=True)
            out[by] = json.loads(r.stdout)
        return out

    def central_upto(self) -> int:
        from edge.central.store import CentralStore

        s = CentralStore(self.db.dsn)
        try:
            seqs = s.seqs(H.SITE, H.BOX)
        finally:
            s.close()
        n = 0
        for n_, q in enumerate(seqs, start=1):
            if q != n_:
                break
            n = q
        return n

    async def collect_live(self) -> dict[str, Any]:
        """While the box still runs: the head, the centre caught up to it, both statistics."""
        d0 = datetime.fromtimestamp(self.t_load0, TZ).date()
        d1 = datetime.now(TZ).date()
        for _attempt in range(10):
            h = await self.head()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and await asyncio.to_thread(self.central_upto) < h:
                await asyncio.sleep(1)
            sb = await self.box_stats(d0, d1)
            sc = await asyncio.to_thread(self.central_stats, d0, d1)
            h2 = await self.head()
            if sb == sc or h2 == h:
                break
            self.say(f"head moved {h} -> {h2} while comparing statistics; again")
        return {"head": h, "stats_box": sb, "stats_central": sc,
                "central_upto": await asyncio.to_thread(self.central_upto)}

    def evidence(self) -> C.Evidence:
        from edge.central.store import CentralStore
        from edge.store import JournalFile
        from edge.verify import verify_db

        live = self.evidence_live
        head = live["head"]
        db = self.dir / "data" / "hallbox.db"
        jf = JournalFile(db)
        try:
            journal = [json.loads(r[6]) for r in jf.journal_rows() if r[0] <= head]
            segs: dict[str, list[tuple[float, float]]] = {c: [] for c in self.cameras}
            for cam, a, b in jf.video_segments():
                segs.setdefault(cam, []).append((a, b))
        finally:
            jf.close()
        v = verify_db(db)
        verify = (v.ok, f"intact, {v.events} events, head seq {v.head_seq}" if v.ok
                  else f"BROKEN at seq {v.broken_seq}: {v.reason}")
        cs = CentralStore(self.db.dsn)
        try:
            central = [e for e in cs.events(H.SITE, H.BOX) if e["seq"] <= head]
            breaks = cs.breaks()
        finally:
            cs.close()
        printed = []
        for i in range(len(self.devices.printer.tickets)):
            txt = self.devices.printer.text(i)
            printed.extend(_numbers(txt))
        punches = [(p.user_id, p.when.strftime("%Y-%m-%dT%H:%M:%S"))
                   for p in self.devices.zk.records]
        cam_faults = [(f.params["camera"], f.start, f.end, f.cls) for f in self.injector.faults
                      if f.cls in CAMERA_LANE and "camera" in f.params]
        first_ready = self.box.lives[0].ready or self.t_load0
        lives = [asdict(x) for x in self.box.lives]
        cpu_avg = 100 * self.box.cpu_s / max(1.0, time.time() - self.box.lives[0].started)
        import re

        dups = re.findall(r"duplicates=(\d+)", self.ingest.log.read_text(errors="replace"))
        return C.Evidence(
            journal=journal, journal_verify=verify, central=central, central_breaks=breaks,
            ledger=self.ledger.to_json(), printed=printed, punches=punches, segments=segs,
            camera_faults=cam_faults, down_spans=self.box.down_spans(),
            record_span=(max(first_ready + 20, self.t_load0), self.t_load1),
            segment_seconds=self.plan.segment_seconds, stats_box=live["stats_box"],
            stats_central=live["stats_central"], serving=self.serving, crashes=self.crashes,
            fault_counts=dict(self.injector.counts()), fault_classes=CLASSES,
            min_each=self.min_each, injector_problems=self.injector.problems,
            duplicates_received=sum(int(x) for x in dups) if dups else None,
            resources={"box lives (restarts + 1)": len(lives),
                       "peak RSS of the box process": f"{self.box.peak_rss_kib / 1024:.0f} MiB",
                       "CPU of the box process": f"{self.box.cpu_s:.0f} s, {cpu_avg:.0f}% "
                       f"average of one core, {self.box.peak_cpu_pct:.0f}% peak (5 s)"})


def _numbers(text: str) -> list[str]:
    """Ticket numbers on a printed ticket (a letter and three digits, the large line)."""
    import re

    compact = text.replace(" ", "")
    m = re.findall(r"(?<![A-Za-z0-9])([A-G]\d{3})(?!\d)", compact)
    return m[:1]


async def main_async(**kw: Any) -> int:
    s = Soak(**kw)
    print(f"SOAK_SEED={s.seed} SOAK_MINUTES={s.minutes:g} windows={s.windows} "
          f"cameras={s.n_cameras} tickets={s.tickets} min_each={s.min_each}", flush=True)
    rows: list[C.Row] = []
    try:
        await s.setup()
        await s.day()
        await asyncio.to_thread(s.box.stop)
        await asyncio.to_thread(s.ingest.stop)
        ev = s.evidence()
        rows = C.check(ev)
    finally:
        await s.teardown()
    report = C.render(rows)
    header = (f"==== hallbox soak: seed {s.seed}, {s.minutes:g} min, {s.windows} windows, "
              f"{s.n_cameras} cameras; faults log {s.dir / 'faults.jsonl'} ====")
    print(header)
    print(report)
    ok = C.passed(rows)
    failed = sum(not r.ok for r in rows)
    print(f"==== verdict: {'PASS' if ok else f'FAIL ({failed} checks)'} ====", flush=True)
    (s.dir / "verdict.json").write_text(json.dumps(
        {"seed": s.seed, "passed": ok, "rows": [asdict(r) for r in rows]},
        ensure_ascii=False, indent=1), encoding="utf-8")
    (s.dir / "ledger.json").write_text(json.dumps(s.ledger.to_json(), ensure_ascii=False),
                                       encoding="utf-8")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    seed = int(env.get("SOAK_SEED") or secrets.randbelow(2**31))
    minutes = float(env.get("SOAK_MINUTES") or 20)
    run_dir = Path(env.get("SOAK_DIR") or ROOT / "var" / "soak" /
                   f"{datetime.now():%Y%m%d-%H%M%S}-{seed}")
    return asyncio.run(main_async(
        seed=seed, minutes=minutes, windows=int(env.get("SOAK_WINDOWS") or 40),
        cameras=int(env.get("SOAK_CAMERAS") or 8),
        tickets=int(env.get("SOAK_TICKETS") or int(165 * minutes)),
        min_each=int(env.get("SOAK_MIN_EACH") or 10), keep=env.get("SOAK_KEEP") == "1",
        run_dir=run_dir))
