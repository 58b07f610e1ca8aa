"""The hall runtime: runs a domain operation, persists it with its events, then notifies.

Everything runs on the asyncio loop's thread, so operations are serialised without locks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from edge.bus import EventBus
from edge.clock import Clock, SystemClock
from edge.config import HallConfig
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.domain.queue import Hall
from edge.health import HealthRegistry
from edge.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Hall], tuple[T, list[DomainEvent]]]


class HallRuntime:
    def __init__(self, config: HallConfig, data_dir: str | Path, *, clock: Clock | None = None,
                 ignore_hours: bool = False) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.data_dir = Path(data_dir)
        self.store = Store(self.data_dir / "hallbox.db", site=config.hall.site,
                           box=config.hall.box)
        self.bus = EventBus()
        self.ignore_hours = ignore_hours
        self.hall = self._load()
        self.health = HealthRegistry(self)

    def _load(self) -> Hall:
        hall = Hall(self.config, self.clock, ignore_hours=self.ignore_hours)
        day = self.store.meta("day")
        hall.restore(day, self.store.load_tickets(day) if day else [], self.store.load_windows(),
                     self.store.load_open_appointments())
        return hall

    def close(self) -> None:
        self.store.close()

    def emit(self, events: list[DomainEvent], extra: Any = None) -> list[dict[str, Any]]:
        """Persist events that come from outside the queue (devices, link) on the same path."""
        return self._persist(events, extra)

    def execute(self, op: Op[T], *, extra: Any = None) -> T:
        pre = self.hall.open_day_if_needed()
        try:
            result, events = op(self.hall)
        except DomainError:
            # Refusals change nothing, but a day opened just before must still be recorded.
            if pre:
                self._persist(pre, self._day_extra(pre))
            self.hall.dirty.clear()
            raise
        except Exception:
            # A bug midway through an operation may have changed memory without its event:
            # go back to what is on disk rather than commit half an operation later.
            log.exception("operation failed unexpectedly; reloading hall state from the store")
            self.hall = self._load()
            raise
        self._persist(pre + events, _chain(self._day_extra(pre), extra))
        return result

    @staticmethod
    def _day_extra(pre: list[DomainEvent]) -> Any:
        """A new business day ends every staff session, in the same transaction."""
        if not any(e.type == "day.opened" for e in pre):
            return None
        return lambda db: db.execute("DELETE FROM sessions")

    def tick(self) -> None:
        """Periodic: opens the new business day even when nobody takes a ticket."""
        pre = self.hall.open_day_if_needed()
        if pre:
            self._persist(pre, self._day_extra(pre))

    def _persist(self, events: list[DomainEvent], extra: Any = None) -> list[dict[str, Any]]:
        h = self.hall
        d = h.dirty
        if not events and not d.tickets and not d.windows and not d.appointments \
                and extra is None:
            return []
        try:
            sealed = self.store.commit(
                events, now=h.local(),
                tickets=list(d.tickets.values()),
                windows=[h.windows[n] for n in d.windows],
                appointments=[h.appointments[c] for c in d.appointments],
                meta={"day": h.day} if h.day else None,
                extra=extra,
            )
        except Exception:
            # The database refused: memory must not run ahead of what is on disk.
            log.exception("commit failed; reloading hall state from the store")
            self.hall = self._load()
            raise
        finally:
            d.clear()
        self.bus.publish(sealed)
        return sealed


def _chain(*fns: Any) -> Any:
    """Run several in-transaction side writes as one."""
    todo = [f for f in fns if f is not None]
    if not todo:
        return None

    def run(db: Any) -> None:
        for f in todo:
            f(db)

    return run
