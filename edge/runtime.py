"""The hall runtime: runs a domain operation, queues it with its events for the store's writer,
and publishes the sealed events once they are on disk.

Operations apply to the in-memory hall one at a time, in order, under one lock (normally all
from the loop thread, so the lock is never contended). Their commits are grouped by the store's
writer thread; a caller learns the result of its operation at once but is told it is durable
(and subscribers see its events) only after its group's fsync:

- `await rt.run(op)`: the API, drivers and commands; the loop never waits on disk.
- `rt.execute(op)`: the same from synchronous code (tests, tools); blocks until durable.
- `rt.submit_each(ops)`: several operations read in one go (a device line's burst of keys),
  each applied and refused on its own, committed as one job with one completion.
- `rt.post(events)` / `await rt.record(events)` / `rt.emit(events)`: events from outside the
  queue (devices, the link) on the same path: without waiting / awaited / blocking.

Subscribers run on the loop the box was attached to (`attach`), in commit order, never inside a
transaction. When a group fails to commit, memory is reloaded from disk (it ran ahead of it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from edge.bus import EventBus
from edge.clock import Clock, SystemClock
from edge.config import HallConfig
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.domain.queue import Hall
from edge.health import HealthRegistry
from edge.store import Job, StateRows, Store, Write

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Hall], tuple[T, list[DomainEvent]]]
Envelope = dict[str, Any]


class Completion:
    """One queued commit: durable once `settle` ran (with `sealed`, or failed with `error`).

    A thread that must block on it (`wait`) gets a threading.Event made on demand: nearly every
    completion is awaited on the loop or answered by a callback, and an Event (a Condition and
    a lock) for each operation was a measurable share of a 250-window burst."""

    __slots__ = ("_event", "_future", "_loop", "error", "published", "sealed", "settled")
    _guard = threading.Lock()  # orders settle() against a waiter making its Event

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._future: asyncio.Future[list[Envelope]] | None = None
        if loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._future = loop.create_future()
        self._event: threading.Event | None = None
        self.settled = False
        self.sealed: list[Envelope] | None = None
        self.error: BaseException | None = None
        self.published = False

    def settle(self, sealed: list[Envelope] | None, error: BaseException | None) -> None:
        """The outcome (from the store's writer thread, or at once for an empty operation)."""
        self.sealed, self.error = sealed, error
        with Completion._guard:
            self.settled = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float = 60.0) -> list[Envelope]:
        if not self.settled:
            with Completion._guard:
                if not self.settled and self._event is None:
                    self._event = threading.Event()
                event = self._event
            if event is not None and not event.wait(timeout):
                raise TimeoutError("the store did not commit in time")
        if self.error is not None:
            raise self.error
        assert self.sealed is not None
        return self.sealed

    def when_durable(self, fn: Callable[[BaseException | None], None]) -> None:
        """On the loop: call `fn(error)` once the commit is durable (None) or failed.

        For callers that only answer a device (a keypad's ack): a callback, not a task per
        operation, which with 250 windows calling at once was a good part of the loop's work.
        """
        fut: asyncio.Future[Any] | None = self._future
        if fut is None:  # made off the box's loop: wait on a thread, as done() does
            fut = asyncio.ensure_future(self.done())
        fut.add_done_callback(lambda f: fn(None if f.cancelled() else f.exception()))

    async def done(self) -> list[Envelope]:
        if self._future is None:
            return await asyncio.to_thread(self.wait)
        return await self._future


class HallRuntime:
    def __init__(self, config: HallConfig, store: Store, *, clock: Clock | None = None,
                 ignore_hours: bool = False) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.store = store
        self.bus = EventBus()
        self.ignore_hours = ignore_hours
        self._lock = threading.RLock()
        self.loop: asyncio.AbstractEventLoop | None = None
        # Committed completions waiting for their loop, in commit order: one wake-up of the
        # loop per group, not per operation (a wake-up is a write to the loop's self-pipe,
        # and each one made the writer thread give up and retake the GIL).
        self._ready: dict[asyncio.AbstractEventLoop, list[Completion]] = {}
        self._ready_lock = threading.Lock()
        # Called after memory was reloaded from disk (a failed commit): services that keep
        # their own state beside the hall's (the rating desk) reload theirs.
        self.reload_listeners: list[Callable[[], None]] = []
        self.hall = self._load()
        self.health = HealthRegistry(self)
        store.on_failure = self._on_store_failure

    @classmethod
    def open(cls, config: HallConfig, data_dir: Any, *, clock: Clock | None = None,
             ignore_hours: bool = False) -> HallRuntime:
        """A runtime on its own store at {data_dir}/hallbox.db (tests and tools)."""
        from pathlib import Path

        store = Store(Path(data_dir) / "hallbox.db", site=config.hall.site,
                      box=config.hall.box)
        return cls(config, store, clock=clock, ignore_hours=ignore_hours)

    @property
    def data_dir(self) -> Any:
        return self.store.path.parent

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish on this loop from now on (the serving box's loop)."""
        self.loop = loop

    def _load(self) -> Hall:
        hall = Hall(self.config, self.clock, ignore_hours=self.ignore_hours)
        day = self.store.meta("day")
        hall.restore(day, self.store.load_tickets(day) if day else [], self.store.load_windows(),
                     self.store.load_open_appointments())
        return hall

    def close(self) -> None:
        self.store.close()

    # ---- operations ----------------------------------------------------------------------
    def submit(self, op: Op[T], *, writes: Iterable[Write] = ()) -> tuple[T, Completion]:
        """Apply an operation now and queue its commit; refusals raise and change nothing."""
        with self._lock:
            pre = self.hall.open_day_if_needed()
            try:
                result, events = op(self.hall)
            except DomainError:
                # Refusals change nothing, but a day opened just before must still be recorded.
                if pre:
                    self._queue(pre, self._day_writes(pre))
                self.hall.dirty.clear()
                raise
            except Exception as e:
                log.exception("operation failed unexpectedly; reloading hall state from the store")
                self.hall.dirty.clear()
                if pre:
                    self._queue(pre, self._day_writes(pre))
                failed = e
            else:
                return result, self._queue(pre + events, [*self._day_writes(pre), *writes])
        self._recover()
        raise failed

    def submit_each(self, ops: Sequence[Op[Any]]) -> tuple[list[Any], Completion]:
        """Apply `ops` now, in order, as `submit` would one by one, and queue their commits as
        one job. Each result is the operation's value, or the exception that refused it: a
        DomainError changes nothing and the others go on; an unexpected error reloads memory
        from disk (as in `submit`) after the operations before it were queued, and the ones
        after it are not applied (their result is the same error).

        For bursts: 250 windows calling at once arrive as a few reads of ~50 keys each, and a
        job, a completion and a wake-up per key were a quarter of the box's work per call."""
        results: list[Any] = []
        events: list[DomainEvent] = []
        with self._lock:
            pre = self.hall.open_day_if_needed()
            state = self._take_state(bool(pre))
            failed: Exception | None = None
            for op in ops:
                if failed is not None:
                    results.append(failed)
                    continue
                try:
                    value, evs = op(self.hall)
                except DomainError as e:
                    results.append(e)  # nothing changed
                    self.hall.dirty.clear()
                    continue
                except Exception as e:
                    log.exception("operation failed unexpectedly; reloading hall state from "
                                  "the store")
                    failed = e
                    results.append(e)
                    self.hall.dirty.clear()  # half an operation is not committed
                    continue
                results.append(value)
                events += evs
                # Each operation's rows as it left them: a later failure cannot taint them.
                state.extend(self._take_state(bool(evs)))
            done = self._queue(pre + events, self._day_writes(pre), state=state,
                               force=failed is not None)
        if failed is not None:
            self._recover()
        return results, done

    async def run(self, op: Op[T], *, writes: Iterable[Write] = ()) -> T:
        result, done = self.submit(op, writes=writes)
        await done.done()
        return result

    def execute(self, op: Op[T], *, writes: Iterable[Write] = ()) -> T:
        result, done = self.submit(op, writes=writes)
        self._wait_and_publish(done)
        return result

    def post(self, events: list[DomainEvent], *, writes: Iterable[Write] = ()) -> Completion:
        """Queue events from outside the queue (devices, link); durable later."""
        with self._lock:
            done = self._queue(events, list(writes), force=True)
        return self._settle(done)

    def _settle(self, done: Completion) -> Completion:
        if done._loop is None:
            # Synchronous code with no loop to publish on: finish here, in order.
            self._wait_and_publish(done)
        return done

    async def record(self, events: list[DomainEvent], *,
                     writes: Iterable[Write] = ()) -> list[Envelope]:
        return await self.post(events, writes=writes).done()

    def emit(self, events: list[DomainEvent], *, writes: Iterable[Write] = ()) -> list[Envelope]:
        done = self.post(events, writes=writes)
        return self._wait_and_publish(done)

    def tick(self) -> Completion | None:
        """Periodic: opens the new business day even when nobody takes a ticket."""
        with self._lock:
            pre = self.hall.open_day_if_needed()
            if not pre:
                return None
            done = self._queue(pre, self._day_writes(pre))
        return self._settle(done)

    @staticmethod
    def _day_writes(pre: list[DomainEvent]) -> list[Write]:
        """A new business day ends every staff session, in the same transaction."""
        if not any(e.type == "day.opened" for e in pre):
            return []
        return [Store.end_all_sessions()]

    # ---- the commit path -----------------------------------------------------------------
    def _take_state(self, with_events: bool) -> StateRows:
        """The rows of what operations changed since the last call (and forget the marks)."""
        h = self.hall
        d = h.dirty
        state = StateRows.of(d.tickets.values(), (h.windows[n] for n in d.windows),
                             (h.appointments[c] for c in d.appointments),
                             {"day": h.day} if h.day and (with_events or d.tickets) else None)
        d.clear()
        return state

    def _queue(self, events: list[DomainEvent], writes: list[Write],
               force: bool = False, state: StateRows | None = None) -> Completion:
        if state is None:
            state = self._take_state(bool(events))
        loop = self.loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        done = Completion(loop)
        if not events and not state and not writes and not force:
            done.settle([], None)
            if done._future is not None:
                done._future.set_result([])
            done.published = True
            return done

        def finished(sealed: list[Envelope] | None, exc: BaseException | None) -> None:
            # The writer thread: record the outcome, then hand publishing to the loop.
            done.settle(sealed, exc)
            if loop is not None and not loop.is_closed():
                self._hand_to_loop(loop, done)

        self.store.submit(Job(events, self.hall.local(), state, writes, finished))
        return done

    def _hand_to_loop(self, loop: asyncio.AbstractEventLoop, done: Completion) -> None:
        """The writer thread: queue `done` for its loop; wake the loop only if not yet woken."""
        with self._ready_lock:
            pending = self._ready.get(loop)
            if pending is not None:
                pending.append(done)
                return
            self._ready[loop] = [done]
        try:
            loop.call_soon_threadsafe(self._deliver_ready, loop)
        except RuntimeError:  # the loop closed meanwhile: nobody left to tell
            with self._ready_lock:
                self._ready.pop(loop, None)

    def _deliver_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._ready_lock:
            ready = self._ready.pop(loop, [])
        for done in ready:
            try:
                self._deliver(done)
            except Exception:  # as a failing callback would have: the others still go
                log.exception("delivering a commit failed")

    def _deliver(self, done: Completion) -> None:
        # The caller's wake-up is scheduled first, then subscribers run (synchronously, now):
        # they still see the event before the caller continues, and tasks they start run
        # after it, as when commits were synchronous.
        fut = done._future
        if fut is not None and not fut.done():
            if done.error is not None:
                fut.set_exception(done.error)
            else:
                fut.set_result(done.sealed or [])
        if done.error is None and not done.published:
            done.published = True
            self.bus.publish(done.sealed or [])

    def _wait_and_publish(self, done: Completion) -> list[Envelope]:
        sealed = done.wait()
        if done._loop is None and not done.published:
            # No loop to publish on: the waiting caller does it, in its own order.
            done.published = True
            self.bus.publish(sealed)
        return sealed

    def _recover(self) -> None:
        """After an operation failed midway (a bug), memory may hold half of it: go back to
        what is on disk rather than commit half an operation later. Everything queued before
        it is let reach the disk first (outside the lock: a failing commit's handler takes
        it), or memory would forget operations that are about to be committed."""
        try:
            self.store.flush()
        except Exception:  # that commit failed: its handler reloaded memory already
            log.exception("waiting for the queued commits failed")
            return
        with self._lock:
            self._reload()

    def _on_store_failure(self, exc: BaseException) -> None:
        # The writer thread: memory ran ahead of a group that is not on disk.
        log.error("commit failed (%s); reloading hall state from the store", exc)
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        self.hall = self._load()
        for listener in list(self.reload_listeners):
            try:
                listener()
            except Exception:
                log.exception("reloading %s failed", listener)
