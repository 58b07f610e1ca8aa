"""The clip of a ticket, for real: a ticket served for 20 s at a recorded window, cut by stream
copy, fetched through its signed url with Range requests; every refusal; the video.export
command with an upload; a bad rating's snapshot."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from edge.api.app import create_app
from edge.domain.rating import Level, Submission
from edge.link.commands import CommandContext, CommandError
from edge.ratings import RatingService
from edge.recorder import clips as C
from edge.recorder.command import cmd_video_export
from tests.video_fixtures import (
    CENTRAL,
    FPS,
    GOP,
    KIOSK,
    MANAGER,
    events,
    ffprobe,
    video_config,
    video_hall,
)
from tests.waiting import until

PADDING = 2
SERVE_S = 20


async def _put_server(received: dict[str, Any]) -> tuple[asyncio.AbstractServer, int]:
    """A minimal HTTP PUT receiver on loopback (the central room's upload target)."""
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = (await r.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
        received["method"] = lines[0].split()[0]
        received["type"] = hdrs.get("content-type")
        received["body"] = await r.readexactly(int(hdrs["content-length"]))
        w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_ticket_clip_urls_refusals_export_and_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = video_config(clip_padding_seconds=PADDING, clip_max_minutes=60)
        async with video_hall(tmp_path, cfg) as (rt, svc, _sims):
            rec = svc.recorders["cam-w1"]
            # Recorded well before the call: the padding reaches back before it.
            await until(lambda: rec.segments >= PADDING + 3, 30)
            services = svc.services  # type: ignore[attr-defined]
            app = create_app(rt, services)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                       base_url="http://127.0.0.1")  # a host the box allows
            r = await client.post("/api/v1/sessions", json={"staff_id": "S001", "pin": "8001",
                                                             "window": 1})
            staff = {"Authorization": f"Bearer {r.json()['token']}"}
            t = await rt.run(lambda h: h.issue("SHMS"))
            waiting = await rt.run(lambda h: h.issue("SHMS"))
            await rt.run(lambda h: h.call_next(1))
            await rt.run(lambda h: (None, h.start(1)))
            await asyncio.sleep(SERVE_S)
            await rt.run(lambda h: (None, h.finish(1)))
            served = rt.hall.tickets[t.id]
            assert served.called_at and served.finished_at

            # The clip of the ticket.
            r = await client.post(f"/api/v1/tickets/{t.id}/video", headers=MANAGER)
            assert r.status_code == 201, r.text
            ans = r.json()
            assert ans["camera"] == "cam-w1" and "sig=" in ans["url"]
            path = ans["url"].removeprefix("http://127.0.0.1")
            full = await client.get(path)
            assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
            clip_file = tmp_path / "clip.mp4"
            clip_file.write_bytes(full.content)
            info = ffprobe(clip_file)
            duration = float(info["format"]["duration"])
            expected = (served.finished_at - served.called_at).total_seconds() + 2 * PADDING
            gop_s = GOP / FPS
            assert expected - 0.3 <= duration <= expected + gop_s + 0.3, (duration, expected)
            # The reported start is the keyframe at or before call - padding.
            from datetime import datetime

            start = datetime.fromisoformat(ans["start"]).timestamp()
            end = datetime.fromisoformat(ans["end"]).timestamp()
            asked = served.called_at.timestamp() - PADDING
            assert asked - gop_s - 0.3 <= start <= asked + 0.05
            assert abs((end - start) - duration) < 0.05
            # No re-encode: the source's codec parameters.
            seg = svc.store.video_segments_between("cam-w1", start, end)[0][2]
            src = ffprobe(svc.folder / seg)["streams"][0]
            got = info["streams"][0]
            for k in ("codec_name", "profile", "level", "width", "height", "pix_fmt",
                      "has_b_frames"):
                assert got[k] == src[k], k
            # Faststart: the index (moov) comes before the media (mdat).
            assert full.content.find(b"moov") < full.content.find(b"mdat")

            # Range requests, as a browser scrubbing.
            part = await client.get(path, headers={"Range": "bytes=100-1099"})
            assert part.status_code == 206
            assert part.headers["content-range"] == f"bytes 100-1099/{len(full.content)}"
            assert part.content == full.content[100:1100]
            acc = events(rt, "video.accessed")
            assert acc and acc[-1]["ticket"] == t.id and acc[-1]["camera"] == "cam-w1"
            listing = await client.get("/api/v1/video/accesses", headers=CENTRAL)
            assert any(a["type"] == "video.accessed" for a in listing.json()["accesses"])
            assert (await client.get("/api/v1/video/accesses", headers=staff)).status_code == 403
            # A seq beyond SQLite's INTEGER is refused, not a 500 (found by the API fuzz).
            big = await client.get("/api/v1/video/accesses?after_seq=" + "9" * 28,
                                   headers=CENTRAL)
            assert big.status_code == 422, big.text

            # Refusals, each problem+json.
            async def refused(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
                assert resp.status_code == status, resp.text
                assert resp.headers["content-type"] == "application/problem+json"
                body = resp.json()
                assert body["type"] == f"urn:hallbox:problem:{code}", body
                return body

            await refused(await client.post("/api/v1/tickets/20991231-A999/video",
                                             headers=MANAGER), 404, "unknown-ticket")
            await refused(await client.post(f"/api/v1/tickets/{waiting.id}/video",
                                             headers=MANAGER), 409, "never-called")
            now = time.time()
            from edge.events import rfc3339

            def at(ts: float) -> str:
                return rfc3339(datetime.fromtimestamp(ts, svc.tz))

            b = await refused(await client.post("/api/v1/cameras/cam-w1/video", headers=MANAGER,
                                                json={"from": at(now - 7200),
                                                      "to": at(now - 7000)}),
                              404, "no-recording")
            assert at(now - 7200)[:16] in b["detail"]
            first = svc.store.video_segments_between("cam-w1", 0, 1e12)[0][0]
            b = await refused(await client.post("/api/v1/cameras/cam-w1/video", headers=MANAGER,
                                                json={"from": at(first - 30),
                                                      "to": at(first + 3)}),
                              404, "no-recording")
            assert "partial" in b["detail"]  # says which part is missing
            ok = await client.post("/api/v1/cameras/cam-w1/video", headers=CENTRAL,
                                   json={"from": at(first - 30), "to": at(first + 3),
                                         "partial": True})
            assert ok.status_code == 201 and ok.json()["missing"]
            b = await refused(await client.post("/api/v1/cameras/cam-w1/video", headers=MANAGER,
                                                json={"from": at(now - 3 * 3600),
                                                      "to": at(now)}),
                              422, "range-too-long")
            await refused(await client.post(f"/api/v1/tickets/{t.id}/video", headers=staff),
                          403, "forbidden")
            await refused(await client.post(f"/api/v1/tickets/{t.id}/video", headers=KIOSK),
                          403, "forbidden")
            assert (await client.post(f"/api/v1/tickets/{t.id}/video")).status_code == 401
            clip_id = path.split("/")[-1].split("?")[0]
            forged = path.replace("sig=", "sig=0") [:-1]
            await refused(await client.get(forged), 403, "forged-url")
            other = C.sign(b"not the box's secret" * 2, clip_id, int(now) + 60)
            await refused(await client.get(f"/api/v1/video/clips/{clip_id}?exp={int(now) + 60}"
                                           f"&sig={other}"), 403, "forged-url")
            refusals = events(rt, "video.refused")
            assert refusals and refusals[0]["reason"] == "forged-url"
            assert len(refusals) == 1  # one a minute per client: the open url cannot flood
            old = int(now) - 5
            await refused(await client.get(f"/api/v1/video/clips/{clip_id}?exp={old}"
                                           f"&sig={C.sign(svc.secret, clip_id, old)}"),
                          410, "expired-url")
            sneaky = "..%2F..%2Fhallbox.db"
            await refused(await client.get(f"/api/v1/video/clips/{sneaky}?exp={int(now) + 60}"
                                           f"&sig={C.sign(svc.secret, '../../hallbox.db', 0)}"),
                          400, "bad-path")

            # Cutting is bounded: beyond MAX_EXPORTS at once, a clear 429.
            from edge.recorder.service import MAX_EXPORTS

            svc._exporting = MAX_EXPORTS
            await refused(await client.post(f"/api/v1/tickets/{t.id}/video", headers=MANAGER),
                          429, "busy")
            svc._exporting = 0

            # The central room's command: url, or the clip uploaded by PUT.
            received: dict[str, Any] = {}
            server, port = await _put_server(received)
            ctx = CommandContext(rt, None, "cmd-video-1", "video.export", services)
            out = await cmd_video_export(ctx, {"ticket": t.id,
                                               "put_url": f"http://127.0.0.1:{port}/up.mp4"})
            server.close()
            assert out["uploaded"] and out["status"] == 201 and out["camera"] == "cam-w1"
            assert received["method"] == "PUT" and received["type"] == "video/mp4"
            assert received["body"][4:8] == b"ftyp" and len(received["body"]) == out["bytes"]
            try:
                await cmd_video_export(ctx, {"ticket": waiting.id})
                raise AssertionError("a ticket never called has no clip")
            except CommandError as e:
                assert e.code == "never-called"
            try:
                await cmd_video_export(ctx, {"ticket": t.id, "camera": "cam-w1"})
                raise AssertionError("ticket and camera together are ambiguous")
            except CommandError as e:
                assert e.code == "bad-args"

            # A bad rating takes a snapshot; its event names the file.
            ratings: RatingService = services.ratings
            assert ratings is not None
            await until(lambda: ratings.pending_for(1) is not None, 5)
            outcome = await ratings.submit(Submission(1, Level.DISSATISFIED, "tablet", "tablet-w1",
                                                t.id, "服务态度差"))
            assert outcome.accepted
            ref = events(rt, "rating.submitted")[-1]["snapshot"]
            assert ref.startswith("_snapshots/cam-w1/") and t.id in ref
            await until(lambda: (svc.folder / ref).exists(), 15)
            assert (svc.folder / ref).read_bytes()[:2] == b"\xff\xd8"
            await client.aclose()

    asyncio.run(main())
