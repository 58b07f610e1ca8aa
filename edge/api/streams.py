"""Live SSE streams that scale: each event is rendered once and its bytes shared by every client.

- Rendered once: a committed event becomes frames once, appended to the stream's shared log
  (several times `client_queue` frames); each client is a cursor into that log, so an event
  costs nothing per client. At a flush the bytes after a cursor are joined once and shared
  by every client at that cursor (all but the stragglers).
- The board is a state, not a log: an event only marks it changed (and a call adds its `call`
  frame); the board is rendered once per flush, after the calls of that flush, so a burst of
  tickets is one board frame, and taking a ticket never renders the board on its own path.
  Call frames and journal frames are all sent (the journal stream is lossless).
- Written in batches: clients are woken by one shared timer (`flush_ms` after the first event
  of a burst), journal clients first, then a slice of clients at a time sized to a short
  budget of loop time (from the measured cost of a write), with a pause between slices: the
  loop goes idle between them, so a request (and the store's writer thread, which needs the
  GIL) never waits behind more than one slice. With many clients a flush takes longer and the
  next one coalesces more board changes; the writes per second stay bounded by the pacing.
- A client whose socket is full costs nothing per event: its pump waits for the transport to
  drain (nothing more is buffered for it), the log is shared, and a flush only checks it.
- Bounded: a client whose socket stays full (it reads too slowly or not at all) while it
  falls more than `client_queue` frames behind is told so (`event: overflow`) and
  disconnected; when its socket is not even being read, its connection is closed under it.
  EventSource reconnects; the journal stream resumes from Last-Event-ID.
- Capped: at most `max_clients` over all streams; one more gets 503 problem+json.

The journal stream's backlog comes from the store, not from the log: a client catching up reads
pages from disk until it reaches the head and only then goes live, so a long backlog never
makes it fall behind.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from edge.api.problems import Refusal
from edge.config.api import StreamLimits
from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
Envelope = dict[str, Any]
Frame = tuple[int, bytes, str | None]  # seq, bytes, what it supersedes (None: nothing)
BACKLOG_PAGE = 500
KEEPALIVE = b": keep-alive\n\n"
LOG_FACTOR = 8
SLICE_GAP_S = 0.001
SLICE_BUDGET_S = 0.00025  # loop time the writes of one slice may take
SLICE_MAX = 64
WRITE_COST_S = 50e-6  # a first guess of one client's write (task step, ASGI, send())
WRITE_COST_CAP_S = 0.002


def frame(event: str, data: Any, eid: int | None = None) -> bytes:
    head = f"id: {eid}\n" if eid is not None else ""
    return (f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
            ).encode()


class StreamClient:
    """A cursor into its stream's shared log of frames: offering an event costs nothing per
    client; the client's pump takes what is after its cursor."""

    def __init__(self, broadcast: Broadcast, limit: int, live: bool = True) -> None:
        self.broadcast = broadcast
        self.limit = limit
        self.cursor = broadcast.count
        self.wake = asyncio.Event()
        self.cut = asyncio.Event()  # fell behind: disconnect
        self.live = live  # False while a journal client catches up from the store
        self.waiting = False  # its pump waits for frames (it is not stuck writing)

    @property
    def behind(self) -> int:
        return self.broadcast.count - self.cursor if self.live else 0

    def go_live(self) -> None:
        self.cursor = self.broadcast.count
        self.live = True

    def check(self) -> bool:
        """At a flush: True when there is something to take. A client whose pump is still
        writing the previous batch (its socket is full) and is more than `limit` frames
        behind is cut; one that is waiting is never cut for frames the hub itself has not
        handed it yet."""
        behind = self.behind
        if not self.waiting and behind > self.limit and not self.cut.is_set():
            self.cut.set()
        return behind > 0 or self.cut.is_set()

    def take(self) -> Batch:
        self.wake.clear()
        if self.behind > len(self.broadcast.log):
            self.cut.set()  # frames it never got have left the log: it must resume
            return NOTHING
        batch = self.broadcast.since(self.cursor) if self.behind else NOTHING
        self.cursor = self.broadcast.count
        return batch


class Batch(NamedTuple):
    """What a client at some cursor is sent at a flush: its frames (superseded ones dropped),
    their bytes joined once, the highest seq among them."""
    frames: list[Frame]
    data: bytes
    top: int


NOTHING = Batch([], b"", 0)


class Broadcast:
    """One stream's fan-out; `render` turns a committed event into frames (or none), once,
    into a log every client reads from. With `state`, an event only marks that state changed
    and `state(seq)` renders its frame once at the next flush (the board)."""

    def __init__(self, hub: StreamHub, name: str, render: Callable[[Envelope], list[Frame]],
                 state: Callable[[int], Frame] | None = None) -> None:
        self.hub = hub
        self.name = name
        self.render = render
        self.state = state
        self.changed_at: int | None = None  # seq of the last change not yet rendered
        self.clients: set[StreamClient] = set()
        self.rendered = 0  # renders (once each, whatever the number of clients)
        self.count = 0  # frames ever appended to the log
        # Longer than a client may fall behind: a client the hub is slow to wake loses nothing.
        self.log: deque[tuple[int, Frame]] = deque(maxlen=LOG_FACTOR * hub.limits.client_queue)
        self._batches: dict[int, Batch] = {}  # cursor -> batch, for the current count
        self._unsubscribe: Callable[[], None] | None = None  # on the bus while clients are

    def _on_event(self, env: Envelope) -> None:
        frames = self.render(env)
        if self.state is not None:
            self.changed_at = env["seq"]
            self.hub.flush_soon()
        if frames:
            self.rendered += 1
        self.append(frames)

    def settle(self) -> None:
        """At a flush: the changed state's frame, rendered once, after the frames before it."""
        if self.state is not None and self.changed_at is not None:
            seq, self.changed_at = self.changed_at, None
            self.rendered += 1
            self.append([self.state(seq)], flush=False)

    def append(self, frames: list[Frame], flush: bool = True) -> None:
        for f in frames:
            self.count += 1
            self.log.append((self.count, f))
        if frames:
            self._batches.clear()
            if flush:
                self.hub.flush_soon()

    def since(self, cursor: int) -> Batch:
        """The frames after `cursor`, the bytes joined once per cursor and flush (nearly all
        clients share one cursor: a flush costs one join, not one per client)."""
        got = self._batches.get(cursor)
        if got is None:
            n = self.count - cursor
            items = [f for _, f in itertools.islice(self.log, len(self.log) - n, None)]
            # A frame of a kind (board, keep-alive) supersedes those before it.
            last = {f[2]: i for i, f in enumerate(items) if f[2] is not None}
            frames = [f for i, f in enumerate(items) if f[2] is None or last[f[2]] == i]
            got = Batch(frames, b"".join(f[1] for f in frames),
                        max((f[0] for f in frames), default=0))
            self._batches[cursor] = got
        return got

    def join(self, live: bool = True) -> StreamClient:
        self.hub.admit()
        c = StreamClient(self, self.hub.limits.client_queue, live)
        self.clients.add(c)
        if self._unsubscribe is None:
            self._unsubscribe = self.hub.rt.bus.subscribe(f"stream-{self.name}",
                                                          self._on_event)
        self.hub.started()
        return c

    def leave(self, c: StreamClient) -> None:
        self.clients.discard(c)
        if not self.clients and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


class _QuietCut(logging.Filter):
    """uvicorn logs an error when an app returns mid-response; for a cut client that is the
    intended way to close its connection, so that one line is dropped (ours says why)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pending and record.getMessage().startswith("ASGI callable returned without "
                                                            "completing response"):
            self.pending -= 1
            return False
        return True


class StreamHub:
    def __init__(self, rt: HallRuntime, limits: StreamLimits) -> None:
        self.rt = rt
        self.limits = limits
        self.cuts = 0  # clients disconnected for falling behind
        self.refused = 0  # clients refused at the cap
        self._quiet = _QuietCut()
        logging.getLogger("uvicorn.error").addFilter(self._quiet)
        self._flush: asyncio.TimerHandle | None = None
        self._flushing = False  # slices of a flush still to come
        self._more = False  # frames came during a flush: the next one follows it
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._cut_logged_at = float("-inf")
        self._keepalive: asyncio.Task[None] | None = None
        self.write_cost = WRITE_COST_S  # running mean of one client's write, in seconds
        self.board = Broadcast(self, "board", self._render_call, self._render_board)
        self.journal = Broadcast(self, "journal",
                                 lambda env: [(env["seq"], frame("event", env, env["seq"]),
                                               None)])

    @property
    def clients(self) -> int:
        return len(self.board.clients) + len(self.journal.clients)

    def _all(self) -> list[StreamClient]:
        # Journal clients first: few, and each needs every event.
        return [*self.journal.clients, *self.board.clients]

    def wrote(self, seconds: float) -> None:
        """A pump's write took this long (task step, ASGI, send()): sizes the slices."""
        self.write_cost += (seconds - self.write_cost) / 64

    def cut_one(self, c: StreamClient, peer: str) -> None:
        """Count a client disconnected for falling behind; log the first, then at most one
        summary a minute (a hall of stuck displays must not flood the log)."""
        self.cuts += 1
        now = asyncio.get_running_loop().time()
        if now - self._cut_logged_at >= 60:
            log.info("%s stream client %s fell more than %d frames behind; disconnected "
                     "(%d clients so far)", c.broadcast.name, peer, c.limit, self.cuts)
            self._cut_logged_at = now

    def admit(self) -> None:
        if self.clients >= self.limits.max_clients:
            self.refused += 1
            raise Refusal(503, "too-many-streams",
                          f"this box serves at most {self.limits.max_clients} live streams; "
                          "try again shortly", headers={"Retry-After": "5"})

    def started(self) -> None:
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())

    def flush_soon(self) -> None:
        """Wake every client with frames once, a moment after the first of a burst. During a
        flush the next one waits until `flush_ms` after it ends: the slower a flush (many
        clients), the more a board frame coalesces, and the loop is never flushing back to
        back."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside the loop (tests driving the runtime)
            self._settle()
            self._wake_slice(self._all(), now=True)
            return
        if self._flush_loop is not loop:  # a flush pending on a loop that is gone never ends
            self._flush, self._flushing, self._more = None, False, False
            self._flush_loop = loop
        if self._flush is not None:
            return
        if self._flushing:
            self._more = True
            return
        self._flush = loop.call_later(self.limits.flush_ms / 1000, self._wake)

    def _settle(self) -> None:
        self.board.settle()
        self.journal.settle()

    def _wake(self) -> None:
        self._flush = None
        self._flushing = True
        self._settle()
        self._wake_slice([c for c in self._all() if c.check()])

    def _wake_slice(self, todo: list[StreamClient], now: bool = False) -> None:
        """A slice of clients per loop iteration: requests (a ticket being taken) are served
        between the slices instead of waiting behind a thousand writes."""
        size = len(todo) if now else max(1, min(SLICE_MAX,
                                                int(SLICE_BUDGET_S / self.write_cost)))
        for c in todo[:size]:
            if c.check():
                c.wake.set()
        if len(todo) > size:
            # A short pause between slices, not call_soon: the loop goes idle and releases
            # the GIL, so the store's writer thread commits a ticket without waiting out the
            # interpreter's switch interval behind a thousand writes.
            asyncio.get_running_loop().call_later(SLICE_GAP_S, self._wake_slice,
                                                  todo[size:])
        elif not now:
            self._flushing = False
            if self._more:
                self._more = False
                self.flush_soon()

    async def _keep_alive(self) -> None:
        """One timer for every client: a comment line now and then keeps proxies open."""
        while self.clients:
            await asyncio.sleep(self.limits.keepalive_s)
            for b in (self.board, self.journal):
                if b.clients:
                    b.append([(0, KEEPALIVE, "keep-alive")])

    def _render_call(self, env: Envelope) -> list[Frame]:
        if env["type"] not in ("ticket.called", "ticket.recalled"):
            return []
        d = env["data"]
        return [(env["seq"], frame("call", {"number": d["number"], "window": d["window"],
                                            "type": env["type"]}), None)]

    def _render_board(self, seq: int) -> Frame:
        # The hall as it is now: it includes every change up to `seq` (and perhaps a later
        # one whose own change will render it again).
        return (seq, frame("board", self.rt.hall.board(), seq), "board")


Backlog = Callable[[int], tuple[list[tuple[int, bytes]], bool]]


class EventStream(Response):
    """The ASGI response of one stream client.

    `first`: frames to send before anything live (taken when the client joined).
    `backlog(after)`: for a client that is not live yet, the next page of stored frames after
    seq `after` and whether it reached the head (then the client goes live)."""

    media_type = "text/event-stream"

    def __init__(self, client: StreamClient, first: list[bytes], *, after: int = 0,
                 backlog: Backlog | None = None) -> None:
        self.client = client
        self.first = first
        self.after = after
        self.backlog = backlog
        self.status_code = 200
        self.background = None
        self.raw_headers = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        c = self.client
        hub = c.broadcast.hub
        pump = asyncio.create_task(self._pump(send))
        gone = asyncio.create_task(self._disconnected(receive))
        cut = asyncio.create_task(c.cut.wait())
        try:
            done, _ = await asyncio.wait({pump, gone, cut},
                                         return_when=asyncio.FIRST_COMPLETED)
            if cut in done and not pump.done():
                # The pump ends itself with an overflow frame unless it is stuck on a socket
                # nobody reads; give it a moment, then close the connection under it.
                await asyncio.wait({pump, gone}, timeout=1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
            if c.cut.is_set():
                hub.cut_one(c, _peer(scope))
                if not pump.done():
                    hub._quiet.pending += 1
        finally:
            for t in (pump, gone, cut):
                t.cancel()
            await asyncio.gather(pump, gone, cut, return_exceptions=True)
            c.broadcast.leave(c)

    async def _disconnected(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _pump(self, send: Send) -> None:
        c = self.client
        hub = c.broadcast.hub
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})

        async def out(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        for data in self.first:
            await out(data)
        sent = self.after
        while not c.live and self.backlog is not None:
            page, at_head = self.backlog(sent)
            if page:
                sent = page[-1][0]
                await out(b"".join(d for _, d in page))
            if at_head:
                c.go_live()  # no await since the last read: nothing falls in between
        while True:
            if c.cut.is_set():
                await out(frame("overflow", {"detail": f"fell more than {c.limit} events "
                                             "behind; reconnect to resume"}))
                break
            began = time.perf_counter()
            batch = c.take()
            data = batch.data
            if self.backlog is not None and batch.frames and batch.frames[0][0] <= sent:
                # A journal client that caught up from the store may be offered an event it
                # already read there: seq decides.
                data = b"".join(d for s, d, _ in batch.frames if s > sent or s == 0)
            sent = max(sent, batch.top)
            if data:
                await out(data)
                took = time.perf_counter() - began
                if took < WRITE_COST_CAP_S:  # longer: it waited for its socket, not the loop
                    hub.wrote(took)
            else:
                c.waiting = True
                try:
                    await c.wake.wait()
                finally:
                    c.waiting = False
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
