"""The journal (paged, and live) and the public board (snapshot, and live)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from edge.api.auth import Roles
from edge.api.deps import Ctx
from edge.api.problems import Refusal
from edge.api.spec import refusals
from edge.api.streams import BACKLOG_PAGE, EventStream, frame

router = APIRouter(tags=["journal and streams"])
MAX_SEQ = 2**63 - 1  # SQLite's INTEGER
LAST_EVENT_ID = re.compile(r"[0-9]{1,19}")
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Server-sent events", "content": {"text/event-stream": {
        "schema": {"type": "string"}}}},
    **refusals(422, 503),
}
STREAM: dict[str, Any] = {"response_class": EventStream, "response_model": None,
                          "status_code": 200, "responses": STREAM_RESPONSES}
Journal = Depends(Roles("manager", "central"))
# EventSource cannot send an Authorization header: the stream takes ?token= too.
JournalStream = Depends(Roles("manager", "central", query_token=True))


@router.get("/api/v1/board")
async def board(ctx: Ctx) -> dict[str, Any]:
    """What the hall board and the kiosk show (public; no staff names)."""
    opened = ctx.rt.tick()
    if opened is not None:
        await opened.done()  # the board shows the day it opens
    return ctx.rt.hall.board()


@router.get("/api/v1/board/stream", **STREAM)
async def board_stream(ctx: Ctx) -> EventStream:
    """The board as it stands on joining, then a `board` frame (the board's latest state; `id:`
    is the seq of the last change it includes) at most every `flush_ms` while it changes: a
    burst of changes is one frame. Every call comes as a `call` frame, before the board that
    shows it. `overflow` then end of stream for a client that fell behind."""
    client = ctx.streams.board.join()
    # Joined first, then the snapshot, with no await between: nothing falls in between.
    return EventStream(client, [frame("board", ctx.rt.hall.board())])


@router.get("/api/v1/events", dependencies=[Journal])
async def events(ctx: Ctx, after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 type: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    store = ctx.rt.store
    items = store.events_after(after_seq, limit, type)
    return {"events": items, "head_seq": store.head_seq,
            "next_after_seq": items[-1]["seq"] if items else after_seq}


@router.get("/api/v1/events/stream", **STREAM, dependencies=[JournalStream])
async def events_stream(request: Request, ctx: Ctx,
                        after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
                        token: Annotated[str | None, Query(
                            description="the bearer token, for EventSource (which cannot "
                                        "send headers)", max_length=200)] = None
                        ) -> EventStream:
    """Every journal event as it is committed (`id:` is its seq). With `after_seq` (or the
    Last-Event-ID header EventSource sends on reconnecting) the stored events after it come
    first. A seq beyond the journal's head is refused (422), not waited for."""
    store = ctx.rt.store
    resume = request.headers.get("last-event-id")
    pointer = "/query/after_seq"
    if after_seq is None and resume is not None:
        if not LAST_EVENT_ID.fullmatch(resume) or int(resume) > MAX_SEQ:
            raise Refusal(422, "bad-last-event-id", "Last-Event-ID must be a journal seq "
                          "(ASCII digits)", "/header/Last-Event-ID")
        after_seq, pointer = int(resume), "/header/Last-Event-ID"
    if after_seq is not None and after_seq > store.head_seq:
        raise Refusal(422, "beyond-head", f"seq {after_seq} is beyond the journal's head "
                      f"{store.head_seq}", pointer)
    if after_seq is None:
        return EventStream(ctx.streams.journal.join(), [], after=store.head_seq)

    def backlog(after: int) -> tuple[list[tuple[int, bytes]], bool]:
        page = store.events_after(after, BACKLOG_PAGE)
        frames = [(env["seq"], frame("event", env, env["seq"])) for env in page]
        last = frames[-1][0] if frames else after
        return frames, last >= store.head_seq

    return EventStream(ctx.streams.journal.join(live=False), [], after=after_seq,
                       backlog=backlog)
