"""How the API is served: uvicorn with the [api.limits] the ASGI app cannot enforce itself.

- `ws_max_size`: a WebSocket frame over the limit is refused by the server before it is
  buffered (the evaluator's own 4 KB check comes after);
- `limit_concurrency`: connections beyond the cap get 503 from uvicorn instead of taking file
  descriptors until accept() fails; the cap stays below the process's file limit; requests in
  flight are capped lower by the app itself (edge.api.limits.LanGate, `request_cap`), so a
  refusal is normally the box's 503 problem+json, not uvicorn's plain text;
- accept errors (out of file descriptors) are logged once, and once more when accepting works
  again, not once per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from typing import Any

import uvicorn

from edge.config.api import ApiSection

log = logging.getLogger(__name__)
FD_RESERVE = 128  # descriptors kept for the database, devices, the MQTT link, logs


def connection_cap(api: ApiSection) -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return api.limits.max_connections
    return max(10, min(api.limits.max_connections, soft - FD_RESERVE))


def request_cap(api: ApiSection) -> int:
    """edge.api.limits.LanGate's cap: [api.limits] max_requests, and below uvicorn's
    connection cap by a margin (idle keep-alive connections count there, not here), so the
    box answers its own 503 problem+json before uvicorn's plain-text one."""
    conns = connection_cap(api)
    return max(2, min(api.limits.max_requests, conns - max(8, conns // 10)))


def server_config(app: Any, api: ApiSection, host: str, port: int, **kw: Any) -> uvicorn.Config:
    # No proxy in front of a hall's box: the client address (per-address ticket limits, PIN
    # lockouts) is the socket's peer, never an X-Forwarded-For header a local process could
    # set; and uvicorn's proxy-header layer was a cost on every request. Access lines are
    # not logged (the journal records what matters), so uvicorn need not build them.
    opts: dict[str, Any] = {"log_level": "warning", "lifespan": "off", "proxy_headers": False,
                            "access_log": False}
    opts.update(kw)
    return uvicorn.Config(app, host=host, port=port, ws_max_size=api.limits.ws_max_bytes,
                          limit_concurrency=connection_cap(api), **opts)


class AcceptErrors:
    """A loop exception handler: 'socket.accept() out of system resource' logged once, then
    its recovery once; everything else goes to the previous handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop, probe_s: float = 1.0) -> None:
        self.loop = loop
        self.previous = loop.get_exception_handler()
        self.failing = False
        self.suppressed = 0
        self.probe_s = probe_s
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" in str(context.get("message", "")):
            if not self.failing:
                self.failing = True
                log.error("cannot accept connections: %s; the box keeps serving open "
                          "connections and will say when it accepts again",
                          context.get("exception"))
                loop.create_task(self._watch())
            else:
                self.suppressed += 1
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)

    async def _watch(self) -> None:
        while self.failing:
            await asyncio.sleep(self.probe_s)
            try:
                os.close(os.open(os.devnull, os.O_RDONLY))  # a descriptor is free again
            except OSError:
                continue
            self.failing = False
            log.info("accepting connections again (%d repeats of the error not logged)",
                     self.suppressed)
            self.suppressed = 0

