"""The camera plugin as `hallbox run --sim` assembles it (build_box): simulated cameras in
sim.json, the recorder in HallServices, `video.export` among the central commands, the clip
routes on the box's API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from drivers import video
from edge.assembly import build_box
from tests.video_fixtures import MANAGER, video_config
from tests.waiting import until


def test_plugin_records_the_configured_cameras_in_the_assembled_box(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = video_config([
            {"id": "cam-w1", "window": 1, "onvif": "http://192.0.2.1/onvif/device_service",
             "username": "hallbox", "password": "pw-w1"},
            {"id": "cam-hall", "rtsp": "rtsp://192.0.2.2/stream1"}])
        box = build_box(cfg, tmp_path / "data", plugins=[video.build], sim=True,
                        ignore_hours=True)
        assert "video.export" in box.services.commands
        svc = box.services.video
        assert svc is not None and set(svc.recorders) == {"cam-w1", "cam-hall"}
        await box.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=box.app),
                                   base_url="http://127.0.0.1")  # a host the box allows
        try:
            sim = json.loads((tmp_path / "data" / "sim.json").read_text(encoding="utf-8"))
            cams = [d for d in sim["devices"] if d["class"] == "camera"]
            assert {c["id"] for c in cams} == {"cam-w1", "cam-hall"}
            for c in cams:
                assert c["endpoint"].startswith("rtsp://127.0.0.1:")
                assert c["onvif"].startswith("http://127.0.0.1:")
                assert c["onvif"].endswith("/onvif/device_service")
            assert next(c for c in cams if c["id"] == "cam-w1")["window"] == 1
            await until(lambda: all(r.recording for r in svc.recorders.values()), 30)
            r = await client.get("/api/v1/cameras", headers=MANAGER)
            assert {c["id"]: c["recording"] for c in r.json()["cameras"]} == {
                "cam-w1": True, "cam-hall": True}
            assert (await client.get("/api/v1/cameras")).status_code == 401
        finally:
            await client.aclose()
            await box.stop()
            box.close()

    asyncio.run(main())
