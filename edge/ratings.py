"""The rating service: the rating desk wired to the runtime, the queue and the evaluators.

How a rating is requested (the hook into the queue): when `[rating] auto_request` is on (the
default), every committed `ticket.finished` asks the finishing window's evaluator to rate that
ticket, right after the commit. The staff page can also ask explicitly
(`POST /api/v1/windows/{n}/rating-request`, edge.api.evaluators), e.g. with auto_request off or
after a superseded request. Tablets (edge.api.evaluators) and 4-key keypads (drivers.evaluator)
submit through `submit`. Expiry to 未评价 runs on a one-second sweep (RatingSweeper).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from edge.config import RatingSection
from edge.domain.errors import DomainError
from edge.domain.rating import Outcome, RatingDesk, RatingRequest, Submission
from edge.runtime import Completion, HallRuntime

log = logging.getLogger(__name__)
RATING_TYPES = ["rating.requested", "rating.submitted", "rating.rejected", "rating.missing"]
T = TypeVar("T")


class RatingService:
    def __init__(self, rt: HallRuntime, cfg: RatingSection) -> None:
        self.rt = rt
        self.cfg = cfg
        self.desk = RatingDesk(rt.clock, cfg.window_seconds, cfg.reason_required)
        # Set by the camera plugin: a bad rating takes the window camera's snapshot.
        self.snapshots: Any = None
        self._snapshot_tasks: set[asyncio.Future[Any]] = set()
        self._restore()
        rt.reload_listeners.append(self._restore)  # a failed commit: back to what is on disk
        if cfg.auto_request:
            rt.bus.subscribe("ratings-auto-request", self._on_event)

    def _restore(self) -> None:
        self.desk = RatingDesk(self.rt.clock, self.cfg.window_seconds, self.cfg.reason_required)
        self.desk.restore(self.rt.hall, self.rt.store.events_since_day_opened(RATING_TYPES))

    async def _guard(self, run: Awaitable[T]) -> T:
        try:
            return await run
        except DomainError:
            raise
        except Exception:
            # The commit failed: the desk must not run ahead of the journal.
            self._restore()
            raise

    # ---- operations (loop thread only) ---------------------------------------------------
    async def request(self, window: int, ticket: str | None = None,
                      staff: str | None = None) -> RatingRequest:
        return await self._guard(self.rt.run(
            lambda h: self.desk.request(h, window, ticket, staff)))

    async def submit(self, sub: Submission) -> Outcome:
        sub = self._with_snapshot(sub)
        out = await self._guard(self.rt.run(lambda h: self.desk.submit(h, sub)))
        return self._take_snapshot(sub, out)

    def submit_nowait(self, sub: Submission) -> tuple[Outcome, Completion]:
        """Apply now (in key order), durable later: for devices that answer after the commit."""
        sub = self._with_snapshot(sub)
        out, done = self.rt.submit(lambda h: self.desk.submit(h, sub))
        return self._take_snapshot(sub, out), done

    def _with_snapshot(self, sub: Submission) -> Submission:
        """A bad rating names the snapshot its event carries."""
        from edge.domain.rating import BAD_LEVELS

        if self.snapshots is None or sub.level not in BAD_LEVELS:
            return sub
        pending = self.desk.pending.get(sub.window)
        ref = self.snapshots.snapshot_ref(sub.window,
                                          sub.ticket or (pending.ticket if pending else None))
        return dataclasses.replace(sub, snapshot=ref) if ref else sub

    def _take_snapshot(self, sub: Submission, out: Outcome) -> Outcome:
        if sub.snapshot and out.accepted and self.snapshots is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: no camera either
                task = asyncio.ensure_future(self.snapshots.take_snapshot(sub.window,
                                                                          sub.snapshot))
                self._snapshot_tasks = {t for t in self._snapshot_tasks if not t.done()}
                self._snapshot_tasks.add(task)
        return out

    async def sweep(self) -> None:
        await self._guard(self.rt.run(lambda h: (None, self.desk.sweep(h))))

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
            loop.create_task(self._auto_request(*args))
        else:
            asyncio.run(self._auto_request(*args))

    async def _auto_request(self, window: int, ticket: str, staff: str) -> None:
        try:
            await self.request(window, ticket, staff)
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
                await self.svc.sweep()
            except Exception:
                log.exception("rating sweep failed; retrying")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
