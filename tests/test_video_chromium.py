"""Done-when of the video issue: a ticket's clip plays in headless Chromium (Debian's) from its
signed url, served by the box's API over real HTTP with Range requests."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
import uvicorn

from edge.api.app import create_app
from tests.video_fixtures import MANAGER, events, video_config, video_hall
from tests.waiting import until

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_ticket_clip_plays_in_chromium(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async def main() -> None:
        cfg = video_config(clip_padding_seconds=1)
        async with video_hall(tmp_path, cfg) as (rt, svc, _sims):
            rec = svc.recorders["cam-w1"]
            await until(lambda: rec.segments >= 3, 30)
            port = _free_port()
            server = uvicorn.Server(uvicorn.Config(
                create_app(rt, svc.services), host="127.0.0.1",  # type: ignore[attr-defined]
                port=port, log_level="warning", lifespan="off"))
            serving = asyncio.create_task(server.serve())
            base = f"http://127.0.0.1:{port}"
            try:
                await until(lambda: server.started, 10)
                await rt.run(lambda h: (None, h.login("S001", 1)))
                t = await rt.run(lambda h: h.issue("SHMS"))
                await rt.run(lambda h: h.call_next(1))
                await rt.run(lambda h: (None, h.start(1)))
                await asyncio.sleep(5)
                await rt.run(lambda h: (None, h.finish(1)))
                async with httpx.AsyncClient() as client:
                    r = await client.post(f"{base}/api/v1/tickets/{t.id}/video",
                                          headers=MANAGER, timeout=60)
                assert r.status_code == 201, r.text
                url = r.json()["url"]
                assert url.startswith(base)
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                    page = await browser.new_page()
                    await page.set_content(
                        f'<video id="v" src="{url}" muted autoplay playsinline></video>')
                    await page.wait_for_function(
                        "() => { const v = document.getElementById('v');"
                        " return v.error || v.currentTime > 1.0; }", timeout=30000)
                    state = await page.evaluate(
                        "() => { const v = document.getElementById('v');"
                        " return {err: v.error && v.error.code, t: v.currentTime,"
                        " d: v.duration, w: v.videoWidth, h: v.videoHeight}; }")
                    # Scrub: a seek near the end is served by a Range request.
                    await page.evaluate("() => { document.getElementById('v').currentTime ="
                                        " document.getElementById('v').duration - 0.5; }")
                    await page.wait_for_function(
                        "() => document.getElementById('v').readyState >= 2", timeout=15000)
                    # The manager's dashboard: ticket lookup, its timeline, and its clip.
                    ctx = await browser.new_context()
                    await ctx.add_init_script(
                        "localStorage.setItem('hallbox.dashboard.token',"
                        f" JSON.stringify({MANAGER['Authorization'].split()[1]!r}))")
                    dash = await ctx.new_page()
                    await dash.goto(f"{base}/dashboard")
                    await dash.fill("#q", t.number)
                    await dash.click("#qBtn")
                    await dash.click("#clipBtn", timeout=30000)
                    await dash.wait_for_function(
                        "() => { const v = document.getElementById('clip');"
                        " return v && v.readyState >= 1 && v.duration > 4; }", timeout=60000)
                    await browser.close()
                assert state["err"] is None, state
                assert (state["w"], state["h"]) == (640, 360)
                assert 5 <= state["d"] <= 5 + 2 + 1.5, state
                assert any(e["ticket"] == t.id for e in events(rt, "video.accessed"))
            finally:
                server.should_exit = True
                await serving

    asyncio.run(main())
