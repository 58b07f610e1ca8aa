"""The link component: drains the outbox to MQTT, keeps `status` and `health/*`, takes commands.

Delivery rules (see mqtt_topics.md):
- events leave in `seq` order at QoS 1 on events/{type}; at most `inflight` are unacknowledged;
- an outbox row is marked sent only after a PUBACK with a success reason code;
- at a disconnect everything in flight is unsent again and is sent again after reconnecting
  (the central side deduplicates on (box, seq); a duplicate carries the same id and hash);
- a backlog is paced by a token bucket (`rate_per_s`) and read in batches of `batch` rows;
- nothing is ever deleted from the outbox to make room: nearing the disk quota is a grade-A alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge.config.mqtt import MqttSection
from edge.events import canonical_json, rfc3339
from edge.health import DeviceHealth, Grade
from edge.link import protocol as P
from edge.link.client import ConnectFailed, Incoming, PahoConnection, ProtocolName
from edge.store import Store

if TYPE_CHECKING:
    from edge.link.commands import CommandRouter, Handler
    from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
DEVICE = "mqtt-link"
BOOT_KEY = "link.boot"


class Link:
    name = DEVICE

    def __init__(self, rt: HallRuntime, cfg: MqttSection,
                 commands: dict[str, Handler] | None = None, services: Any = None) -> None:
        from edge.link.commands import CommandRouter, builtin_commands

        self.rt = rt
        self.cfg = cfg
        self.site, self.box = rt.config.hall.site, rt.config.hall.box
        self.client_id = cfg.client_id or f"{self.site}-{self.box}"
        self.commands: CommandRouter = CommandRouter(
            rt, cfg, self, builtin_commands() if commands is None else commands, services)
        self.conn: PahoConnection | None = None
        self.connected = False
        self.boot = int(rt.store.meta(BOOT_KEY) or 0)
        self.protocol: ProtocolName = "3.1.1" if cfg.protocol == "3.1.1" else "5"
        # mid -> (kind, seq): kind is event | replay | status | health | reply
        self.inflight: dict[int, tuple[str, int | None]] = {}
        self.cursor = 0  # last outbox seq handed to paho on this connection
        self.buffer: deque[tuple[int, str, bytes]] = deque()
        self.replays: deque[list[int]] = deque()  # [next_seq, to_seq]
        self.replay_buffer: deque[tuple[int, str, bytes]] = deque()
        self._acked: list[int] = []
        self._topics: dict[str, bytes] = {}  # event type -> its topic (a few dozen types)
        self._marking: set[int] = set()  # acked, handed to the writer, not yet committed
        self._flush_handle: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._tokens = float(cfg.batch)
        self._refill_at = time.monotonic()
        self._paused_until = 0.0  # after a refused PUBACK: back off, then rewind
        self._rewind = False
        self._refused: str | None = None
        self._last_error: str | None = None
        self._status_at = 0.0
        self._status_head = -1
        self._unsub: Any = None
        self.health_interval_s = 2.0
        self.stats = {"published": 0, "acked": 0, "refused": 0, "connects": 0, "replayed": 0}
        self.backlog = 0
        self.unsent_bytes = 0
        self.oldest_unsent_s = 0

    # ---- component -----------------------------------------------------------------------
    async def start(self) -> None:
        self._unsub = self.rt.bus.subscribe(DEVICE, self._on_committed)
        self._measure()  # the first health report follows the first connection attempt
        self._tasks = [asyncio.create_task(self._connection_loop(), name="link-connect"),
                       asyncio.create_task(self._sender(), name="link-send"),
                       asyncio.create_task(self._housekeeping(), name="link-health")]

    async def stop(self) -> None:
        if self._unsub:
            self._unsub()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        conn = self.conn
        if conn is not None and self.connected:
            # A clean goodbye: the retained status says offline on purpose, not by the Will.
            mid = conn.publish(P.topic_status(self.site, self.box),
                               self._status_payload(False, "stopped"), retain=True)
            if mid is not None:
                self.inflight[mid] = ("status", None)
                deadline = time.monotonic() + 2.0
                while mid in self.inflight and time.monotonic() < deadline and self.connected:
                    await asyncio.sleep(0.02)
            self._flush_acked()
            self.connected = False
            await conn.close()
        self._flush_acked()

    # ---- bus: a committed event is waiting ---------------------------------------------------
    def _on_committed(self, env: dict[str, Any]) -> None:
        self.backlog += 1
        if env.get("type") == "device.health" and self.connected and self.conn is not None:
            self._publish_health(self.conn, env["data"])
        self._wake.set()

    # ---- connection ------------------------------------------------------------------------
    async def _next_boot(self) -> int:
        self.boot += 1
        await asyncio.wrap_future(self.rt.store.write(Store.put_meta(BOOT_KEY, str(self.boot))))
        return self.boot

    async def _connection_loop(self) -> None:
        delay = self.cfg.reconnect_min_s
        loop = asyncio.get_running_loop()
        while True:
            boot = await self._next_boot()
            will = (P.topic_status(self.site, self.box),
                    canonical_json({"online": False, "boot": boot, "reason": "lost",
                                    "site": self.site, "box": self.box}))
            conn = PahoConnection(self.cfg, client_id=self.client_id, protocol=self.protocol,
                                  will=will, listener=self, loop=loop,
                                  inflight=self.cfg.inflight + 16)
            try:
                await conn.open()
            except ConnectFailed as e:
                if e.protocol_refused and self.cfg.protocol == "auto":
                    self.protocol = "3.1.1" if self.protocol == "5" else "5"
                    log.info("broker refused MQTT %s; next try MQTT %s",
                             conn.protocol, self.protocol)
                self._last_error = "broker refused the credentials" if e.auth else (
                    "broker unreachable")
                if self._last_error != getattr(self, "_logged_error", None):
                    log.warning("mqtt link: %s", e)
                    self._logged_error = self._last_error
                self._report()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            delay = self.cfg.reconnect_min_s
            self._logged_error = None
            self._last_error = None
            self._lost = asyncio.Event()
            self.conn, self.connected = conn, True
            self.stats["connects"] += 1
            log.info("mqtt link up (MQTT %s, boot %d, session %s)", conn.protocol, boot,
                     "resumed" if conn.session_present else "new")
            conn.subscribe(f"{P.root(self.site, self.box)}/cmd/+", qos=1)
            self._publish_status(conn, force=True)
            for h in self.rt.health.snapshot():
                self._publish_health(conn, h)
            self._measure()
            self._report()
            self._wake.set()
            await self._lost.wait()
            await conn.close(send_disconnect=False)
            self._report()
            await asyncio.sleep(delay)

    def on_lost(self, conn: PahoConnection, reason: str) -> None:
        if conn is not self.conn:
            return
        log.warning("mqtt link lost (%s); %d in flight become unsent again", reason,
                    sum(1 for k, _ in self.inflight.values() if k == "event"))
        self.connected = False
        self._last_error = "connection lost"
        # Replayed events in flight go back to the front of the replay queue.
        lost_replays = sorted(s for k, s in self.inflight.values() if k == "replay" and s)
        if lost_replays:
            self.replays.appendleft([lost_replays[0], lost_replays[-1]])
        if self.replay_buffer:
            self.replays.appendleft([self.replay_buffer[0][0], self.replay_buffer[-1][0]])
        self.replay_buffer.clear()
        self.inflight.clear()
        self.buffer.clear()
        self.cursor = 0
        self._flush_acked()
        self._lost.set()

    def on_puback(self, conn: PahoConnection, mid: int, ok: bool, reason: str) -> None:
        entry = self.inflight.pop(mid, None)
        if entry is None:
            return
        kind, seq = entry
        if ok:
            if kind in ("event", "replay") and seq is not None:
                self._acked.append(seq)
                self.stats["acked"] += 1
                if len(self._acked) >= 500:
                    self._flush_acked()
                elif self._flush_handle is None:
                    self._flush_handle = asyncio.get_running_loop().call_later(
                        0.05, self._flush_acked)
            if self._refused and kind == "event":
                self._refused = None
                self._report()
        else:
            self.stats["refused"] += 1
            if kind in ("event", "replay"):
                # The broker refused it (ACL, quota...): the row stays unsent; back off and
                # send from the oldest unsent row again.
                if self._refused is None:
                    log.warning("broker refused event seq %s: %s", seq, reason)
                self._refused = f"broker refused events: {reason}"
                self._paused_until = time.monotonic() + self.cfg.reconnect_min_s
                self._rewind = True
                self._report()
        self._wake.set()

    def on_message(self, conn: PahoConnection, msg: Incoming) -> None:
        parts = P.split_topic(msg.topic)
        if parts is None or parts[2] != "cmd":
            return
        asyncio.get_running_loop().create_task(self._command(conn, parts[3], msg))

    async def _command(self, conn: PahoConnection, name: str, msg: Incoming) -> None:
        reply = await self.commands.handle(name, msg.payload)
        rid = reply.get("id") if isinstance(reply.get("id"), str) else None
        safe = rid if rid and all(c.isalnum() or c in "-_." for c in rid) else "unknown"
        topic = msg.response_topic or P.topic_reply(self.site, self.box, safe)
        if conn.closed:
            return
        mid = conn.publish(topic, canonical_json(reply), correlation=msg.correlation_data)
        if mid is not None:
            self.inflight[mid] = ("reply", None)

    # ---- sending -----------------------------------------------------------------------------
    def _flush_acked(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        now = rfc3339(self.rt.hall.local())
        # Marked by the writer with whatever else is committing (no fsync of our own); until it
        # lands, _delivered_upto counts these from `_marking`.
        self._marking.update(acked)
        fut = self.rt.store.write(Store.mark_sent(acked, now))

        def marked(f: Any) -> None:
            self._marking.difference_update(acked)
            if f.exception() is not None:
                # Not marked means sent again later: a duplicate, never a loss.
                log.warning("could not mark %d outbox rows sent: %s", len(acked), f.exception())

        fut.add_done_callback(marked)
        self.backlog = max(0, self.backlog - len(acked))

    def request_replay(self, from_seq: int, to_seq: int) -> int:
        self.replays.append([from_seq, to_seq])
        self._wake.set()
        return to_seq - from_seq + 1

    def _take_token(self) -> float:
        """0 if a token was taken, else seconds to wait for the next one."""
        now = time.monotonic()
        self._tokens = min(float(self.cfg.batch),
                           self._tokens + (now - self._refill_at) * self.cfg.rate_per_s)
        self._refill_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.cfg.rate_per_s

    def _next_event(self) -> tuple[str, int, str, bytes] | None:
        if not self.buffer and self.cursor < self.rt.store.head_seq:
            rows = self.rt.store.outbox_unsent(self.cursor, self.cfg.batch)
            if rows:
                self.buffer.extend(rows)
            else:
                self.cursor = self.rt.store.head_seq
        if self.buffer:
            seq, type_, env = self.buffer.popleft()
            self.cursor = seq
            return "event", seq, type_, env
        if not self.replay_buffer and self.replays:
            rng = self.replays[0]
            rows = self.rt.store.journal_range(rng[0], rng[1], self.cfg.batch)
            if rows:
                self.replay_buffer.extend(rows)
                rng[0] = rows[-1][0] + 1
            if not rows or rng[0] > rng[1]:
                self.replays.popleft()
        if self.replay_buffer:
            seq, type_, env = self.replay_buffer.popleft()
            return "replay", seq, type_, env
        return None

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send_some()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("link sender failed; retrying")
                await asyncio.sleep(1)
                self._wake.set()

    async def _send_some(self) -> None:
        topics = self._topics
        while self.connected and self.conn is not None:
            conn = self.conn
            if self._paused_until:
                wait = self._paused_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                self._paused_until = 0.0
            if self._rewind:
                if any(k == "event" for k, _ in self.inflight.values()):
                    return  # the last acks wake us
                self._flush_acked()
                self.buffer.clear()
                self.cursor = 0
                self._rewind = False
            if len(self.inflight) >= self.cfg.inflight:
                return  # an ack wakes us
            wait = self._take_token()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            item = self._next_event()
            if item is None:
                self._tokens += 1  # nothing to send: give the token back
                self._maybe_status(conn)
                return
            kind, seq, type_, env = item
            topic = topics.get(type_)
            if topic is None:
                topic = topics[type_] = conn.event_topic(
                    P.topic_event(self.site, self.box, type_))
            mid = conn.publish_event(topic, env)
            if mid is None:
                # paho refused (connection going away): the row stays unsent.
                self._rewind = True
                return
            self.inflight[mid] = (kind, seq)
            self.stats["published"] += 1
            if kind == "replay":
                self.stats["replayed"] += 1

    # ---- status and health --------------------------------------------------------------------
    def _delivered_upto(self) -> int:
        low = self.rt.store.outbox_lowest_unsent()
        head = self.rt.store.head_seq
        upto = head if low is None else low - 1
        if self._acked or self._marking:  # acked but not yet written down
            pending = sorted({*self._acked, *self._marking})
            if low is not None and pending[0] == low:
                upto = low
                for s in pending[1:]:
                    if s != upto + 1:
                        break
                    upto = s
        return upto

    def _status_payload(self, online: bool, reason: str | None = None) -> bytes:
        st = self.rt.store
        body: dict[str, Any] = {
            "online": online, "boot": self.boot, "site": self.site, "box": self.box,
            "ts": rfc3339(self.rt.hall.local()),
            "head": {"seq": st.head_seq, "hash": st.head_hash},
            "delivered_upto": self._delivered_upto(),
        }
        if online and self.conn is not None:
            body["protocol"] = self.conn.protocol
        if reason:
            body["reason"] = reason
        return canonical_json(body)

    def _publish_status(self, conn: PahoConnection, force: bool = False) -> None:
        self._status_at = time.monotonic()
        self._status_head = self.rt.store.head_seq
        mid = conn.publish(P.topic_status(self.site, self.box), self._status_payload(True),
                           retain=True)
        if mid is not None:
            self.inflight[mid] = ("status", None)

    def _maybe_status(self, conn: PahoConnection) -> None:
        if (self.rt.store.head_seq != self._status_head
                and time.monotonic() - self._status_at >= self.cfg.status_interval_s):
            self._publish_status(conn)

    def _publish_health(self, conn: PahoConnection, data: dict[str, Any]) -> None:
        device = str(data.get("device", ""))
        if not device or "/" in device or "+" in device or "#" in device:
            return
        payload = dict(data, ts=rfc3339(self.rt.hall.local()))
        mid = conn.publish(P.topic_health(self.site, self.box, device), canonical_json(payload),
                           retain=True)
        if mid is not None:
            self.inflight[mid] = ("health", None)

    def _measure(self) -> None:
        n, size, oldest = self.rt.store.outbox_backlog()
        self.backlog, self.unsent_bytes = int(n), int(size)
        self.oldest_unsent_s = 0
        if oldest:
            age = self.rt.clock.now() - datetime.fromisoformat(oldest)
            self.oldest_unsent_s = max(0, int(age.total_seconds()))

    def quota_bytes(self) -> int:
        return self.cfg.outbox_quota_mb * 1024 * 1024

    def _report(self) -> None:
        grade: Grade | None = None
        detail = ""
        quota = self.quota_bytes()
        if self.unsent_bytes * 100 >= quota * self.cfg.quota_alarm_percent:
            grade, detail = "A", (f"outbox at or above {self.cfg.quota_alarm_percent}% of its "
                                  f"{self.cfg.outbox_quota_mb} MB quota; nothing is dropped, "
                                  "the central feed is falling behind")
        elif self._refused:
            grade, detail = "B", self._refused
        elif not self.connected:
            grade, detail = "B", self._last_error or "not connected yet"
        self.rt.health.report(DeviceHealth(
            DEVICE, "link", self.connected, grade, detail, {
                "backlog": self.backlog, "oldest_unsent_s": self.oldest_unsent_s,
                "unsent_bytes": self.unsent_bytes, "quota_bytes": quota, "boot": self.boot,
                "inflight": len(self.inflight)}))

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                self._measure()
                self._report()
                if self.connected and self.conn is not None:
                    self._maybe_status(self.conn)
                self.commands.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("link housekeeping failed")

    def snapshot(self) -> dict[str, Any]:
        return {"connected": self.connected, "protocol": self.conn.protocol if self.conn else None,
                "boot": self.boot, "backlog": self.backlog, "unsent_bytes": self.unsent_bytes,
                "oldest_unsent_s": self.oldest_unsent_s, "inflight": len(self.inflight),
                **self.stats}

