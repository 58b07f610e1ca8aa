"""Live streams that scale: rendered once and shared, bounded per client, capped in number."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from edge.api.app import create_app
from edge.clock import FakeClock
from edge.config import HallConfig
from edge.config.api import StreamLimits
from edge.runtime import HallRuntime
from tests.supervision_fixtures import free_port

MANAGER = {"authorization": "Bearer demo-manager-token"}


@pytest.fixture
def make_runtime(hall_config: HallConfig, clock: FakeClock,
                 tmp_path: Path) -> Iterator[Any]:
    made: list[HallRuntime] = []

    def make(**limits: Any) -> HallRuntime:
        api = hall_config.api.model_copy(update={"streams": StreamLimits(**limits)})
        rt = HallRuntime.open(hall_config.model_copy(update={"api": api}),
                              tmp_path / f"data{len(made)}", clock=clock)
        rt.tick()
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@asynccontextmanager
async def served(rt: HallRuntime) -> AsyncIterator[tuple[str, Any]]:
    app = create_app(rt)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app.state.ctx.streams
    finally:
        server.should_exit = True
        await task


async def frames(resp: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of an SSE response."""
    event = ""
    async for line in resp.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, line[6:]


async def until(cond: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def pause_resume(rt: HallRuntime, n: int, reason: str = "整理材料") -> None:
    """n board-changing events, committed back to back on the loop thread."""
    for _ in range(n):
        if not rt.hall.windows[1].paused:
            rt.execute(lambda h: (None, h.pause(1, reason, "S001")))
        else:
            rt.execute(lambda h: (None, h.resume(1, staff="S001")))


def test_cap_answers_503_problem_then_admits_again(make_runtime: Any) -> None:
    rt = make_runtime(max_clients=2)

    async def scenario() -> None:
        async with served(rt) as (base, hub), httpx.AsyncClient(base_url=base,
                                                                timeout=10) as http:
            async with http.stream("GET", "/api/v1/board/stream") as one, \
                    http.stream("GET", "/api/v1/events/stream", headers=MANAGER) as two:
                assert one.status_code == two.status_code == 200
                assert hub.clients == 2
                for path, headers in (("/api/v1/board/stream", {}),
                                      ("/api/v1/events/stream", MANAGER)):
                    r = await http.get(path, headers=headers)
                    assert r.status_code == 503
                    assert r.headers["content-type"] == "application/problem+json"
                    assert r.headers["retry-after"] == "5"
                    body = r.json()
                    assert body["type"] == "urn:hallbox:problem:too-many-streams"
                    assert body["status"] == 503 and "at most 2" in body["detail"]
                assert hub.refused == 2
            await until(lambda: hub.clients == 0)
            async with http.stream("GET", "/api/v1/board/stream") as again:
                assert again.status_code == 200
                async for event, _ in frames(again):
                    assert event == "board"
                    break

    asyncio.run(scenario())


def test_each_event_is_rendered_once_for_all_clients(make_runtime: Any) -> None:
    rt = make_runtime()
    rt.execute(lambda h: (None, h.login("S001", 1)))

    async def scenario() -> None:
        async with served(rt) as (base, hub), httpx.AsyncClient(base_url=base,
                                                                timeout=10) as http:
            got: list[list[str]] = [[] for _ in range(20)]

            async def watch(i: int) -> None:
                async with http.stream("GET", "/api/v1/board/stream") as r:
                    async for _event, data in frames(r):
                        got[i].append(data)
                        if len(got[i]) == 2:
                            return

            tasks = [asyncio.create_task(watch(i)) for i in range(20)]
            await until(lambda: hub.clients == 20 and all(got))
            before = hub.board.rendered
            pause_resume(rt, 1)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            assert hub.board.rendered == before + 1
            assert len({g[1] for g in got}) == 1  # the same bytes for everyone
            assert json.loads(got[0][1])["windows"][0]["paused"] is True

    asyncio.run(scenario())


def test_a_client_that_falls_behind_is_told_and_disconnected(make_runtime: Any) -> None:
    """It reads too slowly: its socket stays full while more frames come than it may fall
    behind. When it reads again it gets `overflow`, then the end of the stream."""
    rt = make_runtime(client_queue=4, flush_ms=0)
    rt.execute(lambda h: (None, h.login("S001", 1)))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with served(rt) as (base, hub):
            port = int(base.rsplit(":", 1)[1])
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            slow.setblocking(False)
            await loop.sock_connect(slow, ("127.0.0.1", port))
            await loop.sock_sendall(slow, b"GET /api/v1/board/stream HTTP/1.1\r\n"
                                          b"host: 127.0.0.1\r\n\r\n")
            await until(lambda: hub.clients == 1)
            client = next(iter(hub.board.clients))
            for _ in range(5000):
                pause_resume(rt, 1)
                await asyncio.sleep(0)
                if client.cut.is_set():
                    break
            assert client.cut.is_set(), "the slow client was never found behind"
            got = b""  # now it reads, at once (before the box gives up on its socket)
            while True:
                chunk = await asyncio.wait_for(loop.sock_recv(slow, 1 << 16), 10)
                if not chunk:
                    break
                got += chunk
            slow.close()
            events = [line.strip() for line in got.split(b"\n")
                      if line.startswith(b"event: ")]
            assert events[-1] == b"event: overflow" and events[0] == b"event: board"
            assert got.endswith(b"0\r\n\r\n")  # the chunked stream was ended cleanly
            await until(lambda: hub.clients == 0)
            assert hub.cuts == 1

    asyncio.run(scenario())


def test_a_client_that_does_not_read_is_cut_off(make_runtime: Any) -> None:
    """Its socket is full, so not even `overflow` can be written: the connection is closed,
    and a reading client beside it keeps its stream."""
    rt = make_runtime(client_queue=4, flush_ms=0)
    rt.execute(lambda h: (None, h.login("S001", 1)))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with served(rt) as (base, hub), httpx.AsyncClient(base_url=base,
                                                                timeout=10) as http:
            port = int(base.rsplit(":", 1)[1])
            sleeper = socket.socket()
            sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sleeper.setblocking(False)
            await loop.sock_connect(sleeper, ("127.0.0.1", port))
            await loop.sock_sendall(sleeper, b"GET /api/v1/board/stream HTTP/1.1\r\n"
                                             b"host: 127.0.0.1\r\n\r\n")
            reader_frames = 0
            async with http.stream("GET", "/api/v1/board/stream") as r:
                await until(lambda: hub.clients == 2)
                events = frames(r)
                for _ in range(5000):
                    pause_resume(rt, 1)
                    await anext(events)
                    reader_frames += 1
                    if hub.cuts:
                        break
                assert hub.cuts == 1, "the sleeping client was never cut off"
                await until(lambda: hub.clients == 1)  # the reader is still there
                pause_resume(rt, 1)
                assert (await anext(events))[0] == "board"
            # The sleeper's socket was closed by the server: draining it reaches EOF.
            total = 0
            while True:
                chunk = await asyncio.wait_for(loop.sock_recv(sleeper, 65536), 10)
                if not chunk:
                    break
                total += len(chunk)
            sleeper.close()
            assert total > 0 and reader_frames > 4

    asyncio.run(scenario())


def test_journal_stream_resumes_after_falling_behind(make_runtime: Any) -> None:
    rt = make_runtime(client_queue=4, flush_ms=0)
    rt.execute(lambda h: (None, h.login("S001", 1)))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with served(rt) as (base, hub), httpx.AsyncClient(base_url=base,
                                                                timeout=10) as http:
            port = int(base.rsplit(":", 1)[1])
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            slow.setblocking(False)
            await loop.sock_connect(slow, ("127.0.0.1", port))
            await loop.sock_sendall(slow, b"GET /api/v1/events/stream?after_seq=0 HTTP/1.1\r\n"
                                          b"host: 127.0.0.1\r\n"
                                          b"authorization: Bearer demo-manager-token\r\n\r\n")
            await until(lambda: hub.clients == 1)
            client = next(iter(hub.journal.clients))
            await until(lambda: client.live)  # its backlog (from the store) fitted its socket
            for _ in range(5000):
                pause_resume(rt, 1, "整理材料" * 2000)  # big events fill its socket sooner
                await asyncio.sleep(0)
                if client.cut.is_set():
                    break
            assert client.cut.is_set()
            got = b""
            while True:
                chunk = await asyncio.wait_for(loop.sock_recv(slow, 1 << 16), 10)
                if not chunk:
                    break
                got += chunk
            slow.close()
            lines = [line.strip() for line in got.split(b"\n")]
            assert [x for x in lines if x.startswith(b"event: ")][-1] == b"event: overflow"
            seqs = [int(x[4:]) for x in lines if x.startswith(b"id: ")]
            assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] < rt.store.head_seq
            # EventSource reconnects with the last id it saw and gets the rest, in order.
            async with http.stream("GET", "/api/v1/events/stream",
                                   headers={**MANAGER, "last-event-id": str(seqs[-1])}) as r:
                async for _, data in frames(r):
                    seqs.append(json.loads(data)["seq"])
                    if seqs[-1] == rt.store.head_seq:
                        break
            assert seqs == list(range(1, rt.store.head_seq + 1))

    asyncio.run(scenario())


def test_board_stream_coalesces_a_burst_into_its_latest_state(make_runtime: Any) -> None:
    """The board is a state: a burst of changes is rendered once, as the hall stands after the
    last of them (its id is that event's seq); every call of the burst still comes, in order,
    before that board."""
    rt = make_runtime(flush_ms=2000)  # the whole burst falls within one flush
    for staff, window in (("S001", 1), ("S002", 2), ("S003", 3)):
        rt.execute(lambda h, s=staff, w=window: (None, h.login(s, w)))
    tickets = [rt.execute(lambda h: h.issue("SHMS")) for _ in range(2)]

    async def scenario() -> None:
        async with served(rt) as (base, hub), httpx.AsyncClient(base_url=base,
                                                                timeout=10) as http:
            async with http.stream("GET", "/api/v1/board/stream") as r:
                events = frames(r)
                assert (await anext(events))[0] == "board"  # the snapshot on joining
                before = hub.board.rendered
                rt.execute(lambda h: h.call_next(1))
                for n in range(5):  # window 3 ends paused
                    rt.execute(lambda h, n=n: (None, h.resume(3, staff="S003") if n % 2
                                               else h.pause(3, "整理材料", "S003")))
                rt.execute(lambda h: h.call_next(2))
                rt.execute(lambda h: (None, h.recall(2)))
                got = [await anext(events) for _ in range(4)]
                assert [e for e, _ in got] == ["call", "call", "call", "board"]
                calls = [json.loads(d) for _, d in got[:3]]
                assert [(c["number"], c["window"], c["type"]) for c in calls] == [
                    (tickets[0].number, 1, "ticket.called"),
                    (tickets[1].number, 2, "ticket.called"),
                    (tickets[1].number, 2, "ticket.recalled")]
                board = json.loads(got[3][1])
                assert board == rt.hall.board()
                windows = {w["window"]: w for w in board["windows"]}
                assert windows[3]["paused"] is True
                assert windows[1]["number"] == tickets[0].number
                assert windows[2]["number"] == tickets[1].number
                # 9 board changes, 3 calls: far fewer renders than events.
                assert hub.board.rendered - before == 4

    asyncio.run(scenario())


def test_board_frame_carries_the_seq_of_the_last_change(make_runtime: Any) -> None:
    rt = make_runtime(flush_ms=0)
    rt.execute(lambda h: (None, h.login("S001", 1)))

    async def scenario() -> None:
        async with served(rt) as (base, _hub), httpx.AsyncClient(base_url=base,
                                                                timeout=10) as http:
            async with http.stream("GET", "/api/v1/board/stream") as r:
                lines = r.aiter_lines()
                while not (await anext(lines)).startswith("data: "):
                    pass  # the snapshot
                pause_resume(rt, 1)
                ids = []
                async for line in lines:
                    if line.startswith("id: "):
                        ids.append(int(line[4:]))
                    if line.startswith("data: "):
                        break
                assert ids == [rt.store.head_seq]

    asyncio.run(scenario())


def test_a_reading_journal_client_gets_every_event_through_bursts(make_runtime: Any) -> None:
    """Lossless: bursts far longer than `client_queue`, with board clients beside it, and the
    journal client that reads still gets every seq once, in order, and is never cut."""
    rt = make_runtime(client_queue=16, flush_ms=50)
    rt.execute(lambda h: (None, h.login("S001", 1)))

    async def scenario() -> None:
        async with served(rt) as (base, hub), httpx.AsyncClient(base_url=base,
                                                                timeout=30) as http:
            start = rt.store.head_seq
            boards = [http.stream("GET", "/api/v1/board/stream") for _ in range(20)]
            opened = [await b.__aenter__() for b in boards]
            try:
                async with http.stream("GET", "/api/v1/events/stream",
                                       headers=MANAGER) as r:
                    await until(lambda: hub.clients == 21)
                    seqs: list[int] = []

                    async def read() -> None:
                        async for _, data in frames(r):
                            seqs.append(json.loads(data)["seq"])
                            if seqs[-1] == start + 300:
                                return

                    reader = asyncio.create_task(read())
                    for _ in range(10):
                        pause_resume(rt, 30)  # 30 events back to back: twice client_queue
                        await asyncio.sleep(0.02)
                    await asyncio.wait_for(reader, 30)
                    assert seqs == list(range(start + 1, start + 301))
                    assert hub.cuts == 0
            finally:
                for b, resp in zip(boards, opened, strict=True):
                    await resp.aclose()
                    await b.__aexit__(None, None, None)

    asyncio.run(scenario())
