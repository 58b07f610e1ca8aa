"""The hall's things: tickets, windows, appointments, and the events that record their changes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class TicketState(StrEnum):
    WAITING = "waiting"
    CALLED = "called"
    SERVING = "serving"
    FINISHED = "finished"
    NO_SHOW = "no_show"
    TRANSFERRED = "transferred"
    CANCELLED = "cancelled"


ACTIVE_AT_WINDOW = (TicketState.CALLED, TicketState.SERVING)
TERMINAL = (TicketState.FINISHED, TicketState.TRANSFERRED, TicketState.CANCELLED)


class Priority(StrEnum):
    NORMAL = "normal"
    APPOINTMENT = "appointment"
    GREEN = "green"  # 绿色通道: elderly, disabled, pregnant ...


class Source(StrEnum):
    KIOSK = "kiosk"
    APP = "app"  # booked on the phone app, checked in at the kiosk
    DESK = "desk"  # issued by staff or the guide desk


@dataclass(frozen=True)
class DomainEvent:
    type: str
    data: dict[str, Any]


def _dt(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


def _parse_dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


_FIELDS: dict[type, tuple[str, ...]] = {}


class _Doc:
    """Round-trip to a JSON-able dict for the store; datetimes as ISO strings."""

    _times: tuple[str, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        # Every field is a scalar (str, int, enum, datetime), so a shallow copy is the same
        # document as dataclasses.asdict, which deep-copies each datetime and enum: that was
        # most of the loop's time per operation in a 250-window hall (the state of each
        # operation is serialised on the loop for the store's writer).
        names = _FIELDS.get(type(self))
        if names is None:  # dataclasses.fields() per call was a third of this method's time
            names = _FIELDS[type(self)] = tuple(
                f.name for f in fields(self))  # type: ignore[arg-type]
        d = {n: getattr(self, n) for n in names}
        for k in self._times:
            d[k] = _dt(d[k])
        return d

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Any:
        kw = dict(doc)
        for k in cls._times:
            kw[k] = _parse_dt(kw.get(k))
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in kw.items() if k in names})


@dataclass
class Ticket(_Doc):
    id: str
    day: str
    service: str
    number: str  # what the applicant sees: A001
    seq_no: int
    priority: Priority
    source: Source
    issued_at: datetime
    queued_at: datetime  # FIFO key; a transfer may keep the original arrival
    state: TicketState = TicketState.WAITING
    front: bool = False  # goes before other normal tickets of its service
    window: int | None = None
    staff: str | None = None
    called_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    no_show_at: datetime | None = None
    recalls: int = 0
    appointment: str | None = None
    slot_start: datetime | None = None
    transferred_from: str | None = None
    transferred_to: str | None = None
    end_reason: str | None = None

    _times = ("issued_at", "queued_at", "called_at", "started_at", "finished_at", "no_show_at",
              "slot_start")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Ticket:
        t: Ticket = super().from_doc(doc)
        t.priority = Priority(t.priority)
        t.source = Source(t.source)
        t.state = TicketState(t.state)
        return t


@dataclass
class WindowState(_Doc):
    number: int
    staff: str | None = None
    paused: bool = False
    pause_reason: str | None = None
    current: str | None = None  # ticket id called or being served here
    priority_streak: int = 0  # priority calls in a row, for the starvation cap
    logged_in_at: datetime | None = None

    _times = ("logged_in_at",)


class AppointmentState(StrEnum):
    BOOKED = "booked"
    CHECKED_IN = "checked_in"
    EXPIRED = "expired"


@dataclass
class Appointment(_Doc):
    code: str
    service: str
    slot_start: datetime
    slot_end: datetime
    state: AppointmentState = AppointmentState.BOOKED
    ticket: str | None = None

    _times = ("slot_start", "slot_end")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Appointment:
        a: Appointment = super().from_doc(doc)
        a.state = AppointmentState(a.state)
        return a


@dataclass
class Dirty:
    """What an operation changed, so the store writes exactly that with its events."""

    tickets: dict[str, Ticket] = field(default_factory=dict)
    windows: set[int] = field(default_factory=set)
    appointments: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.tickets.clear()
        self.windows.clear()
        self.appointments.clear()
