"""The rating service: the rating desk wired to the runtime, the queue and the evaluators.

How a rating is requested (the hook into the queue): when `[rating] auto_request` is on (the
default), every committed `ticket.finished` asks the finishing window's evaluator to rate that
ticket, right after the commit. The staff page can also ask explicitly
(`POST /api/v1/windows/{n}/rating-request`, edge.api.evaluator), e.g. with auto_request off or
after a superseded request. Tablets (edge.api.evaluator) and 4-key keypads (drivers.evaluator)
submit through `submit`. Expiry to 未评价 runs on a one-second sweep (RatingSweeper).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from edge.config import RatingSection
from edge.domain.errors import DomainError
from edge.domain.rating import Outcome, RatingDesk, RatingRequest, Submission
from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
RATING_TYPES = ["rating.requested", "rating.submitted", "rating.rejected", "rating.missing"]
_services: weakref.WeakKeyDictionary[HallRuntime, RatingService] = weakref.WeakKeyDictionary()


class RatingService:
    def __init__(self, rt: HallRuntime, cfg: RatingSection) -> None:
        self.rt = rt
        self.cfg = cfg
        self.desk = RatingDesk(rt.clock, cfg.window_seconds, cfg.reason_required)
        self._restore()
        if cfg.auto_request:
            rt.bus.subscribe("ratings-auto-request", self._on_event)

    @classmethod
    def of(cls, rt: HallRuntime) -> RatingService | None:
        """The runtime's one rating service; None when the config has no [rating] section."""
        if rt.config.rating is None:
            return None
        svc = _services.get(rt)
        if svc is None:
            svc = _services[rt] = cls(rt, rt.config.rating)
        return svc

    def _restore(self) -> None:
        row = self.rt.store.db.execute(
            "SELECT max(seq) FROM journal WHERE type='day.opened'").fetchone()
        after = max(0, (row[0] or 1) - 1)
        self.desk.restore(self.rt.hall, self.rt.store.events_after(after, 10**9, RATING_TYPES))

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except DomainError:
            raise
        except Exception:
            # The commit failed: the desk must not run ahead of the journal.
            self._restore()
            raise

    # ---- operations (loop thread only) ---------------------------------------------------
    def request(self, window: int, ticket: str | None = None,
                staff: str | None = None) -> RatingRequest:
        return self._guard(lambda: self.rt.execute(
            lambda h: self.desk.request(h, window, ticket, staff)))

    def submit(self, sub: Submission) -> Outcome:
        return self._guard(lambda: self.rt.execute(lambda h: self.desk.submit(h, sub)))

    def sweep(self) -> None:
        self._guard(lambda: self.rt.execute(lambda h: (None, self.desk.sweep(h))))

    def pending_for(self, window: int) -> RatingRequest | None:
        return self.desk.pending.get(window)

    def _on_event(self, env: dict[str, Any]) -> None:
        if env["type"] != "ticket.finished":
            return
        d = env["data"]
        args = (d["window"], d["ticket"], d["staff"])
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        # After the commit that is being published, not inside its fan-out, so every
        # subscriber sees ticket.finished before rating.requested.
        if loop is not None:
            loop.call_soon(self._auto_request, *args)
        else:
            self._auto_request(*args)

    def _auto_request(self, window: int, ticket: str, staff: str) -> None:
        try:
            self.request(window, ticket, staff)
        except DomainError as e:
            log.info("no rating request for %s at window %s: %s", ticket, window, e.detail)


class RatingSweeper:
    """Ends overdue requests as 未评价 even when nothing else happens at the window."""

    name = "rating-sweeper"

    def __init__(self, svc: RatingService, interval: float = 1.0) -> None:
        self.svc = svc
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.svc.sweep()
            except Exception:
                log.exception("rating sweep failed; retrying")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
