"""The HTTP stack's floor: FastAPI and uvicorn as the box runs them, with nothing of the box.

One route, POST /api/v1/tickets, validating the box's own ticket request body and answering a
small JSON document the way the box's route does (serialised once), served with the box's
uvicorn settings (edge.api.serve.server_config). It issues nothing and stores nothing: what a
client measures against it is what FastAPI, Starlette, uvicorn and the loopback cost per
request on this machine, the part of the box's HTTP figure no change inside the box removes.

    python -m bench.http_floor --port N
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

from edge.api.serve import server_config
from edge.api.tickets import TicketRequest
from edge.api.views import json_answer
from edge.config.api import ApiSection


def floor_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    numbers = itertools.count(1)

    @app.post("/api/v1/tickets", status_code=201, response_model=None)
    async def take_ticket(body: TicketRequest) -> Response:
        return json_answer({"number": f"{body.service}{next(numbers):03d}",
                            "service": body.service, "priority": body.priority}, 201)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_answer({"ok": True})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    server = uvicorn.Server(server_config(floor_app(), ApiSection(), "127.0.0.1", args.port))
    asyncio.run(server.serve())


if __name__ == "__main__":
    main()
