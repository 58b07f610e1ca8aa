"""Floor alerts, yellow then red (黄牌 / 红牌), and their end.

Pure domain code: an injected clock, no I/O. Two sorts of alert:
- conditions, measured on every evaluation (`evaluate`): a service's longest wait, a window left
  unattended while people wait for it, a window paused too long, a device fault, the outbox
  filling up. Each measurement has a yellow and a red threshold. Crossing yellow raises a yellow
  alert; crossing red, or staying yellow for `escalate`, raises it to red (the same alert, an
  `alert.raised` with `escalated: true`); falling below yellow clears it (`alert.cleared`).
  A red alert is never lowered back to yellow: it stays red until cleared.
- occurrences (`occurred`): a bad rating. Raised once, escalated when nobody acknowledged it
  within `escalate`, cleared only by a manager's acknowledgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from edge.clock import Clock
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.events import rfc3339


class AlertLevel(StrEnum):
    YELLOW = "yellow"
    RED = "red"


class AlertKind(StrEnum):
    LONGEST_WAIT = "longest_wait"  # subject service:<code>, minutes
    UNATTENDED = "window_unattended"  # subject window:<n>, minutes
    PAUSED = "window_paused"  # subject window:<n>, minutes
    DEVICE_FAULT = "device_fault"  # subject device:<id>, 1 = grade B, 2 = grade A
    BAD_RATING = "bad_rating"  # subject ticket:<id>
    OUTBOX = "outbox_quota"  # subject outbox, per cent of the quota


CONDITIONS = frozenset({AlertKind.LONGEST_WAIT, AlertKind.UNATTENDED, AlertKind.PAUSED,
                        AlertKind.DEVICE_FAULT, AlertKind.OUTBOX})
# What an alert may say about its subject, beside the common fields.
CONTEXT_KEYS = ("window", "service", "device", "ticket", "number", "staff", "rating", "reason")
UNITS = {AlertKind.LONGEST_WAIT: "minutes", AlertKind.UNATTENDED: "minutes",
         AlertKind.PAUSED: "minutes", AlertKind.DEVICE_FAULT: "grade",
         AlertKind.OUTBOX: "percent", AlertKind.BAD_RATING: "level"}


@dataclass(frozen=True)
class Observation:
    kind: AlertKind
    subject: str
    value: int
    yellow: int
    red: int
    detail: str
    context: dict[str, Any] | None = None  # window, service, device ... for the event


@dataclass
class Alert:
    id: str
    kind: AlertKind
    subject: str
    level: AlertLevel
    raised_at: datetime
    level_at: datetime  # when it took its current level
    value: int
    detail: str
    context: dict[str, Any]

    def view(self, tz: ZoneInfo) -> dict[str, Any]:
        return {"alert": self.id, "kind": self.kind.value, "subject": self.subject,
                "level": self.level.value, "value": self.value, "unit": UNITS[self.kind],
                "detail": self.detail, "raised_at": rfc3339(self.raised_at.astimezone(tz)),
                "level_at": rfc3339(self.level_at.astimezone(tz)), **self.context}


class AlertBoard:
    def __init__(self, clock: Clock, tz: ZoneInfo, escalate: timedelta) -> None:
        self.clock = clock
        self.tz = tz
        self.escalate = escalate
        self.open: dict[tuple[AlertKind, str], Alert] = {}

    # ---- events ----------------------------------------------------------------------------
    def _raised(self, a: Alert, escalated: bool, threshold: int | None) -> DomainEvent:
        return DomainEvent("alert.raised", {
            **a.view(self.tz), "escalated": escalated, "threshold": threshold})

    def _cleared(self, a: Alert, reason: str, by: str | None) -> DomainEvent:
        del self.open[(a.kind, a.subject)]
        now = self.clock.now()
        return DomainEvent("alert.cleared", {
            "alert": a.id, "kind": a.kind.value, "subject": a.subject, "level": a.level.value,
            "reason": reason, "by": by,
            "duration_ms": int((now - a.raised_at).total_seconds() * 1000)})

    def _new(self, kind: AlertKind, subject: str, level: AlertLevel, value: int, detail: str,
             context: dict[str, Any] | None) -> Alert:
        now = self.clock.now()
        a = Alert(f"{kind.value}:{subject}:{int(now.timestamp() * 1000)}", kind, subject, level,
                  now, now, value, detail, dict(context or {}))
        self.open[(kind, subject)] = a
        return a

    # ---- conditions ------------------------------------------------------------------------
    def evaluate(self, observations: list[Observation],
                 kinds: frozenset[AlertKind] = CONDITIONS) -> list[DomainEvent]:
        """Measure every condition of `kinds` once; an open alert of those kinds without an
        observation is over (its subject no longer exists or no longer applies)."""
        now = self.clock.now()
        events: list[DomainEvent] = []
        seen: set[tuple[AlertKind, str]] = set()
        for o in sorted(observations, key=lambda o: (o.kind.value, o.subject)):
            key = (o.kind, o.subject)
            seen.add(key)
            a = self.open.get(key)
            level = AlertLevel.RED if o.value >= o.red else \
                AlertLevel.YELLOW if o.value >= o.yellow else None
            if level is None:
                if a is not None:
                    events.append(self._cleared(a, "resolved", None))
                continue
            if a is None:
                a = self._new(o.kind, o.subject, level, o.value, o.detail, o.context)
                events.append(self._raised(a, False, o.red if level == AlertLevel.RED
                                           else o.yellow))
                continue
            a.value, a.detail = o.value, o.detail
            if a.level == AlertLevel.YELLOW and (level == AlertLevel.RED
                                                 or now - a.level_at >= self.escalate):
                a.level, a.level_at = AlertLevel.RED, now
                events.append(self._raised(a, True, o.red if level == AlertLevel.RED else None))
        for key, a in list(self.open.items()):
            if key[0] in kinds and key[0] in CONDITIONS and key not in seen:
                events.append(self._cleared(a, "resolved", None))
        return events

    # ---- occurrences -----------------------------------------------------------------------
    def occurred(self, kind: AlertKind, subject: str, level: AlertLevel, detail: str,
                 context: dict[str, Any] | None = None) -> list[DomainEvent]:
        if (kind, subject) in self.open:
            return []
        a = self._new(kind, subject, level, 0, detail, context)
        return [self._raised(a, False, None)]

    def escalate_unacknowledged(self) -> list[DomainEvent]:
        now = self.clock.now()
        events = []
        for a in self.open.values():
            if a.kind not in CONDITIONS and a.level == AlertLevel.YELLOW \
                    and now - a.level_at >= self.escalate:
                a.level, a.level_at = AlertLevel.RED, now
                events.append(self._raised(a, True, None))
        return events

    def acknowledge(self, alert_id: str, by: str) -> list[DomainEvent]:
        a = next((x for x in self.open.values() if x.id == alert_id), None)
        if a is None:
            raise DomainError("not_found", "unknown-alert", f"no open alert {alert_id!r}",
                              "alert")
        if a.kind in CONDITIONS:
            raise DomainError("conflict", "alert-is-a-condition",
                              f"{a.kind.value} ends by itself when the condition ends",
                              "alert")
        return [self._cleared(a, "acknowledged", by)]

    # ---- views and restore -----------------------------------------------------------------
    def views(self) -> list[dict[str, Any]]:
        order = {AlertLevel.RED: 0, AlertLevel.YELLOW: 1}
        return [a.view(self.tz) for a in sorted(
            self.open.values(), key=lambda a: (order[a.level], a.raised_at, a.id))]

    def restore(self, envelopes: list[dict[str, Any]]) -> None:
        """Open alerts back from the journal's alert.raised / alert.cleared."""
        self.open.clear()
        ctx_keys = CONTEXT_KEYS
        for env in envelopes:
            d = env["data"]
            kind = AlertKind(d["kind"])
            key = (kind, d["subject"])
            if env["type"] == "alert.cleared":
                self.open.pop(key, None)
                continue
            at = datetime.fromisoformat(d["level_at"])
            a = self.open.get(key)
            if a is None:
                self.open[key] = Alert(d["alert"], kind, d["subject"], AlertLevel(d["level"]),
                                       datetime.fromisoformat(d["raised_at"]), at, d["value"],
                                       d["detail"], {k: d[k] for k in ctx_keys if k in d})
            else:
                a.level, a.level_at, a.value = AlertLevel(d["level"]), at, d["value"]
