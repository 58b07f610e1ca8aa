"""The kiosk's view of ticket printing, without the API knowing any printer driver.

A printer driver registers a `PrintDesk` for the runtime. The kiosk route names the kiosk while
it issues (so the ticket goes to that kiosk's printer), then awaits the print outcome to tell
the applicant what happened: the ticket is issued either way; when the printer is out of paper
the screen says to photograph the number.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge.runtime import HallRuntime


class PrintDesk(Protocol):
    kiosk: str | None  # the kiosk issuing right now (set only around rt.execute)

    async def outcome(self, ticket_id: str, timeout: float) -> dict[str, Any] | None: ...


_desks: weakref.WeakKeyDictionary[Any, PrintDesk] = weakref.WeakKeyDictionary()


def register(rt: HallRuntime, desk: PrintDesk) -> None:
    _desks[rt] = desk


def unregister(rt: HallRuntime) -> None:
    _desks.pop(rt, None)


def desk_for(rt: HallRuntime) -> PrintDesk | None:
    return _desks.get(rt)


@contextlib.contextmanager
def issuing_at(rt: HallRuntime, kiosk: str | None) -> Iterator[None]:
    """Name the kiosk for the tickets issued inside; safe because all runs on one loop thread."""
    desk = _desks.get(rt)
    if desk is None:
        yield
        return
    desk.kiosk = kiosk
    try:
        yield
    finally:
        desk.kiosk = None
