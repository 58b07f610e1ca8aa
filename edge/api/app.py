"""The local API, assembled from its routers (one module per area).

Handlers run on the loop thread: domain operations apply one at a time, in order, and their
commits are grouped by the store's writer. What the routers need is handed over here and kept
on `app.state.ctx` (edge.api.deps): nothing is looked up in module-level registries.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from edge.api import (
    appointments,
    devices,
    evaluators,
    fingerprints,
    health,
    journal,
    notices,
    pages,
    problems,
    reports,
    spec,
    tickets,
    video,
    windows,
)
from edge.api.deps import ApiContext
from edge.api.guards import Guards
from edge.api.limits import LanGate, own_hosts
from edge.api.serve import request_cap
from edge.api.streams import StreamHub
from edge.assembly import HallServices
from edge.resources import ui_dir
from edge.runtime import HallRuntime

UI_DIR = ui_dir()  # from the package, so an installed wheel serves the pages
ROUTERS = (tickets, appointments, windows, journal, health, evaluators, fingerprints, devices,
           reports, notices, video)


def create_app(rt: HallRuntime, services: HallServices | None = None) -> FastAPI:
    services = services or HallServices()
    # docs_url: the pages serve /docs from the box's own swagger-ui files. No OpenTelemetry:
    # a box exports nothing of the kind (its record is the journal), and FastAPI would look
    # for a configured provider on every request.
    app = FastAPI(title="hallbox", version="1", summary="A government service hall's box",
                  docs_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    problems.install(app)
    app.state.runtime = rt
    app.state.services = services
    app.state.ctx = ApiContext(rt, services, StreamHub(rt, rt.config.api.streams), Guards(rt))
    for area in ROUTERS:
        app.include_router(area.router)
    # The pages, their libraries, /docs offline, and the pages' reads (documented too).
    pages_api = pages.install(app, rt, services)
    spec.install(app, [*(area.router for area in ROUTERS), pages_api])
    api = rt.config.api
    # Before any parsing: the request cap (the cheapest refusal when busy), the Host check,
    # the body limit.
    app.add_middleware(LanGate, cap=request_cap(api),
                       allowed=own_hosts(api.allowed_hosts, api.host),
                       max_body=api.limits.max_body_bytes)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(UI_DIR / "index.html")

    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
    return app
