"""`hallbox central ingest`: events from every box into one database, each stored once.

Several ingest processes share `$share/ingest/hallbox/v1/+/+/events/#`; each stores what it
gets (deduplicated on (site, box, seq), chain checked as it arrives) and only then acknowledges
it to the broker (manual ack), so a crash between receipt and commit means redelivery, not loss.
Every `gap_interval_s` it looks for holes below what the boxes say they delivered; a hole seen
twice in a row is asked for again with a signed `replay` command (one process per box claims
the request, the others stand by).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from edge.central.client import CentralBroker, connect_blocking, make_client
from edge.central.store import CentralStore, valid_envelope
from edge.link import protocol as P

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    breaks: int = 0
    replays: int = 0
    gaps: list[tuple[str, str, int, int]] = field(default_factory=list)


class Ingest:
    def __init__(self, broker: CentralBroker, dsn: str, *, keys: dict[str, str],
                 client_id: str | None = None, group: str = "ingest",
                 gap_interval_s: float = 2.0, replay_backoff_s: float = 10.0,
                 batch: int = 500, session_expiry_s: int = 86400) -> None:
        self.broker = broker
        self.dsn = dsn
        self.keys = keys
        self.client_id = client_id or f"ingest-{uuid.uuid4().hex[:8]}"
        self.group = group
        self.gap_interval_s = gap_interval_s
        self.replay_backoff_s = replay_backoff_s
        self.batch = batch
        self.session_expiry_s = session_expiry_s
        self.stats = IngestStats()
        self.q: queue.Queue[tuple[str, bytes, int, int]] = queue.Queue()
        self.stop_event = threading.Event()
        self._seen_gaps: set[tuple[str, str, int]] = set()
        self.client: paho.Client | None = None

    def _on_connect(self, c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.error("broker refused the ingest: %s", rc)
            return
        # Always (re)subscribe: the broker may have lost our session.
        c.subscribe(f"$share/{self.group}/{P.ROOT}/+/+/events/#", qos=1)
        c.subscribe(f"{P.ROOT}/+/+/status", qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        self.q.put((m.topic, bytes(m.payload), m.mid, m.qos))

    def run(self) -> None:
        store = CentralStore(self.dsn, ingest=self.client_id)
        c = make_client(self.broker, self.client_id, manual_ack=True)
        self.client = c
        c.on_message = self._on_message
        connect_blocking(c, self.broker, clean_start=False,
                         session_expiry=self.session_expiry_s)
        c.on_connect = self._on_connect
        self._on_connect(c, None, None, 0, None)
        log.info("ingest %s up, group %s, store %s", self.client_id, self.group,
                 "postgresql" if store.pg else "sqlite")
        next_gap = time.monotonic() + self.gap_interval_s
        try:
            while not self.stop_event.is_set():
                self._drain(store, c)
                if time.monotonic() >= next_gap:
                    self._fill_gaps(store)
                    next_gap = time.monotonic() + self.gap_interval_s
        finally:
            c.disconnect()
            c.loop_stop()
            store.close()
            st = self.stats
            # What this ingest saw, for the operator (and the soak's duplicate count).
            log.info("ingest %s stopped: received=%d stored=%d duplicates=%d rejected=%d "
                     "breaks=%d replays=%d", self.client_id, st.received, st.stored,
                     st.duplicates, st.rejected, st.breaks, st.replays)

    def _drain(self, store: CentralStore, c: paho.Client) -> None:
        try:
            first = self.q.get(timeout=0.1)
        except queue.Empty:
            return
        msgs = [first]
        while len(msgs) < self.batch:
            try:
                msgs.append(self.q.get_nowait())
            except queue.Empty:
                break
        envs: list[dict[str, Any]] = []
        for topic, payload, _mid, _qos in msgs:
            self.stats.received += 1
            parts = P.split_topic(topic)
            if parts is None:
                continue
            site, box, kind, _rest = parts
            try:
                obj = json.loads(payload)
            except ValueError:
                self.stats.rejected += 1
                log.warning("not JSON on %s", topic)
                continue
            if kind == "status":
                if isinstance(obj, dict):
                    r = store.status(site, box, obj)
                    self._note_breaks(r.breaks)
                continue
            if not valid_envelope(obj) or (obj["site"], obj["box"]) != (site, box):
                self.stats.rejected += 1
                log.warning("not an event envelope of %s/%s on %s", site, box, topic)
                continue
            envs.append(obj)
        if envs:
            r = self._insert_retrying(store, envs)
            self.stats.stored += r.stored
            self.stats.duplicates += r.duplicates
            self._note_breaks(r.breaks)
        # Acknowledge only what is committed.
        for _t, _p, mid, qos in msgs:
            if qos > 0:
                c.ack(mid, qos)

    def _insert_retrying(self, store: CentralStore, envs: list[dict[str, Any]]) -> Any:
        """A database outage holds the batch (unacknowledged) until the database is back."""
        delay = 0.5
        logged = False
        while True:
            try:
                return store.insert(envs)
            except Exception as e:
                if not logged:
                    log.error("database refused a batch of %d events (%s); retrying", len(envs), e)
                    logged = True
                if self.stop_event.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)
                try:
                    store.reconnect()
                except Exception as e2:
                    log.debug("reconnect failed: %s", e2)

    def _note_breaks(self, breaks: list[tuple[str, str, int, str, str]]) -> None:
        for site, box, seq, reason, detail in breaks:
            self.stats.breaks += 1
            log.error("CHAIN BREAK %s/%s seq %d: %s (%s)", site, box, seq, reason, detail)

    def _fill_gaps(self, store: CentralStore) -> None:
        gaps = store.find_gaps()
        self.stats.gaps = sorted(gaps)
        starts = {(s, b, lo) for s, b, lo, _hi in gaps}
        # Only a hole seen twice in a row is real (the other consumer may hold the event).
        for site, box, lo, hi in sorted(gaps):
            if (site, box, lo) not in self._seen_gaps:
                continue
            key = self.keys.get(f"{site}/{box}") or self.keys.get("*")
            if not key:
                log.warning("gap %s/%s %d..%d but no command key for that box", site, box, lo, hi)
                continue
            if not store.claim_replay(site, box, lo, hi, self.replay_backoff_s):
                continue
            log.info("gap %s/%s %d..%d: asking for replay", site, box, lo, hi)
            self._send_replay(key, site, box, lo, hi)
        self._seen_gaps = starts

    def _send_replay(self, key: str, site: str, box: str, lo: int, hi: int) -> None:
        if self.client is None:
            return
        cmd = P.make_command(key, site, box, "replay", {"from_seq": lo, "to_seq": hi})
        self.client.publish(P.topic_cmd(site, box, "replay"), json.dumps(cmd).encode(), qos=1)
        self.stats.replays += 1


def load_keys(path: str | None, single: str | None) -> dict[str, str]:
    """Keys file: JSON {"site/box": "key", ...}; "*" is a default for every box."""
    keys: dict[str, str] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object of \"site/box\": \"key\"")
        keys.update(data)
    if single:
        keys["*"] = single
    return keys
