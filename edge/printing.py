"""The kiosk's view of ticket printing, without the API knowing any printer driver.

A printer plugin puts its `PrintDesk` in the hall services (edge.assembly). The kiosk route
names the kiosk while it issues (so the ticket goes to that kiosk's printer), then awaits the
print outcome to tell the applicant what happened: the ticket is issued either way; when the
printer is out of paper the screen says to photograph the number.
"""

from __future__ import annotations

from typing import Any, Protocol


class PrintDesk(Protocol):
    def expect(self, ticket_id: str, kiosk: str | None) -> None:
        """Note which kiosk is issuing this ticket (called inside the issuing operation)."""
        ...

    async def outcome(self, ticket_id: str, timeout: float) -> dict[str, Any] | None: ...
