"""What the hall LAN may take from the box: rates per client address and per id, body sizes,
Host names. All in memory and bounded: a key-flooding client cannot grow them without limit."""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections import OrderedDict, deque
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api.problems import body as problem_body
from edge.clock import Clock

MAX_KEYS = 10_000


class RateWindow:
    """At most `limit` hits per key in any `period_s`; the oldest keys are forgotten first."""

    def __init__(self, limit: int, period_s: float, clock: Clock,
                 max_keys: int = MAX_KEYS) -> None:
        self.limit = limit
        self.period = period_s
        self.clock = clock
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        now = self.clock.now().timestamp()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.period:
            hits.popleft()
        return hits

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may hit again, or None when it may now."""
        hits = self._recent(key)
        if len(hits) < self.limit:
            return None
        return max(1, int(hits[0] + self.period - self.clock.now().timestamp()) + 1)

    def hit(self, key: str) -> None:
        self._recent(key).append(self.clock.now().timestamp())

    def unhit(self, key: str) -> None:
        """Give the newest hit back (a reserved slot that was not used)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()

    def clear(self, key: str) -> None:
        self._hits.pop(key, None)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def send_problem(status: int, code: str, detail: str, instance: str,
                 headers: Iterable[tuple[bytes, bytes]] = ()) -> list[Message]:
    import json

    data = json.dumps(problem_body(status, code, code.replace("-", " ").capitalize(), detail,
                                   instance)).encode()
    return [{"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/problem+json"),
                         (b"content-length", str(len(data)).encode()), *headers]},
            {"type": "http.response.body", "body": data}]


class TooLarge(HTTPException):
    pass


def own_hosts(configured: list[str] | None, listen_host: str) -> set[str] | None:
    """The Host names the API answers; None means any."""
    if configured is not None:
        return None if "*" in configured else {h.lower() for h in configured}
    names = {"localhost", "127.0.0.1", "::1", listen_host.lower()}
    for name in {socket.gethostname(), socket.getfqdn()}:
        names.add(name.lower())
        try:
            for info in socket.getaddrinfo(name, None):
                names.add(str(info[4][0]).lower())
        except OSError:
            pass
    names |= _interface_addresses()
    names.discard("0.0.0.0")
    names.discard("::")
    return names


def _interface_addresses() -> set[str]:
    """The box's own IPv4/IPv6 addresses (Linux), so http://<box ip>/ works on the LAN."""
    out: set[str] = set()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                raw = line.split()[0]
                out.add(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/fib_trie") as f:
            lines = f.read().splitlines()
        for prev, line in itertools.pairwise(lines):
            if "/32 host LOCAL" in line:
                out.add(prev.split()[-1])
    except OSError:
        pass
    return out


def host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class LanGate:
    """What the hall LAN must pass before the API parses anything, in one ASGI layer (one
    layer per check cost a coroutine and its frames on every request, the busiest route's
    included):

    1. at most `cap` HTTP requests in flight (the live streams included): one more gets a 503
       problem+json saying why, with Retry-After, instead of uvicorn's plain-text 503 at its
       own connection cap (which stays above this one: edge.api.serve.request_cap);
    2. only the box's own Host names (`allowed`; None: any): a DNS-rebinding page on another
       name gets 421, a WebSocket close 1008;
    3. bodies of at most `max_body` bytes, refused with 413 before anything parses them: from
       Content-Length when given, else (chunked) by counting the bytes as they arrive.
    """

    def __init__(self, app: ASGIApp, *, cap: int, allowed: set[str] | None, max_body: int,
                 retry_after_s: int = 2) -> None:
        self.app = app
        self.cap = cap
        self.allowed = allowed
        self.max_body = max_body
        self.retry_after = retry_after_s
        self.in_flight = 0
        self.most = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            if self.allowed is not None and host_of(_host(scope)) not in self.allowed:
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.cap:
            self.refused += 1
            await _send_all(send, send_problem(
                503, "too-many-requests-in-flight",
                f"this box serves at most {self.cap} requests at once (live streams "
                f"included) and is at that limit; try again in {self.retry_after} s",
                scope.get("path", ""), [(b"retry-after", str(self.retry_after).encode())]))
            return
        self.in_flight += 1
        if self.in_flight > self.most:
            self.most = self.in_flight
        try:
            if self.allowed is not None:
                host = _host(scope)
                if host_of(host) not in self.allowed:
                    await _send_all(send, send_problem(
                        421, "unknown-host", f"this box does not answer to host {host[:100]!r}",
                        scope.get("path", "")))
                    return
            await self._bounded(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        length: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = self.max_body + 1
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and length > self.max_body:
            await self._too_large(send, scope)
            return
        if not chunked:
            # No body, or one of a Content-Length within the limit: the server reads exactly
            # that many bytes, so there is nothing to count (and the streams' many writes,
            # the busiest routes' answers, pass unwrapped).
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    # An HTTPException passes FastAPI's body reading unchanged and becomes
                    # the 413 problem in the app's handler.
                    raise TooLarge(413, f"request bodies are at most {self.max_body} bytes")
            return msg

        async def tracking(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracking)
        except TooLarge:
            if not started:
                await self._too_large(send, scope)

    async def _too_large(self, send: Send, scope: Scope) -> None:
        await _send_all(send, send_problem(
            413, "too-large", f"request bodies are at most {self.max_body} bytes",
            scope.get("path", ""), [(b"connection", b"close")]))


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return str(value.decode("latin-1"))
    return ""


async def _send_all(send: Send, messages: list[Message]) -> None:
    for msg in messages:
        await send(msg)
