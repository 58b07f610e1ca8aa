"""Guards against a hostile hall LAN: PIN guessing, ticket draining, evaluator token guessing.

In memory, bounded (edge.api.limits.RateWindow). What a supervisor should know is an event:
each failed PIN login (`staff.login_failed`) and each lock (`staff.locked`), never the PIN;
a client address that starts being limited (`lan.limited`), once per limiter window, not once
per refused request.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher

from edge.api.limits import MAX_KEYS, RateWindow
from edge.api.problems import Refusal
from edge.config.api import ApiSection
from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.pins import pin_matches
from edge.runtime import HallRuntime

_ph = PasswordHasher()


class LimitNotices:
    """`lan.limited` once per client address when it starts being limited, and again only
    after that limit ran out: a flood of refused requests is one event, not thousands."""

    def __init__(self, rt: HallRuntime, what: str, count: int, window_s: float) -> None:
        self.rt = rt
        self.what = what
        self.count = count
        self.window_s = window_s
        self.until: OrderedDict[str, float] = OrderedDict()  # client -> limited until
        self.posted = 0

    def refused(self, client: str, wait: int) -> None:
        now = self.rt.clock.now().timestamp()
        until = self.until.get(client)
        if until is not None and until > now:
            return  # already told for this window
        self.until.pop(client, None)
        self.until[client] = now + wait
        while len(self.until) > MAX_KEYS:
            self.until.popitem(last=False)
        self.posted += 1
        # Queued, not awaited: the refusal answers at once; the event is durable shortly.
        self.rt.post([DomainEvent("lan.limited", {
            "what": self.what, "client": client[:64], "count": self.count,
            "window_s": self.window_s,
            "until": rfc3339(self.rt.hall.local(self.rt.clock.now()
                                                + timedelta(seconds=wait)))})])


class LoginGuard:
    """Per staff id: `max_failures` wrong PINs in a row lock it for `lock_minutes` (unknown ids
    too, so a lock tells nothing about which ids exist). Per client address: a rate. PIN checks
    run one at a time on edge.pins' thread; an unknown id is checked against a dummy hash so
    it takes as long as a known one."""

    def __init__(self, rt: HallRuntime, cfg: ApiSection) -> None:
        self.rt = rt
        self.cfg = cfg.logins
        self.addresses = RateWindow(self.cfg.per_address_per_minute, 60, rt.clock)
        self.notices = LimitNotices(rt, "logins", self.cfg.per_address_per_minute, 60)
        self.failures: OrderedDict[str, int] = OrderedDict()
        self.locked_until: dict[str, float] = {}
        # PIN checks under way per staff id: counted with the failures, so guesses sent at
        # once cannot all be tried before the lock (the lock is only set once one fails).
        self.trying: dict[str, int] = {}
        self._dummy: str | None = None
        self.checking = 0  # PIN checks asked for and not answered yet
        self.most_checking = 0
        self.checked = 0  # PIN checks done, the dummy ones for unknown ids included

    def before(self, staff_id: str, address: str) -> None:
        wait = self.addresses.retry_after(address)
        if wait is not None:
            self.notices.refused(address, wait)
            raise Refusal(429, "too-many-logins", f"too many login attempts from {address}; "
                          f"try again in {wait} s", headers={"Retry-After": str(wait)})
        self.addresses.hit(address)
        until = self.locked_until.get(staff_id)
        now = self.rt.clock.now().timestamp()
        if until is not None:
            if until > now:
                wait = int(until - now) + 1
                raise Refusal(429, "staff-locked", f"{staff_id} is locked after "
                              f"{self.cfg.max_failures} wrong PINs; try again in {wait} s",
                              "/body/staff_id", {"Retry-After": str(wait)})
            del self.locked_until[staff_id]
        trying = self.trying.get(staff_id, 0)
        if self.failures.get(staff_id, 0) + trying >= self.cfg.max_failures:
            raise Refusal(429, "staff-locked", f"{staff_id} has {trying} PIN checks under way, "
                          "as many as may fail before it locks; try again in 1 s",
                          "/body/staff_id", {"Retry-After": "1"})
        self.trying[staff_id] = trying + 1

    def done(self, staff_id: str) -> None:
        """The check `before` let through is answered (its failure, if any, counted)."""
        left = self.trying.pop(staff_id, 1) - 1
        if left > 0:
            self.trying[staff_id] = left

    async def verify(self, pin_hash: str | None, pin: str) -> bool:
        """On the process's one argon2 thread (edge.pins), so memory stays flat however many
        try at once; an unknown id is checked against a dummy hash: the same work, the same
        time."""
        self.checking += 1
        self.most_checking = max(self.most_checking, self.checking)
        try:
            if pin_hash is None:
                if self._dummy is None:
                    # once, off the loop
                    self._dummy = await asyncio.to_thread(_ph.hash, secrets.token_hex(8))
                await pin_matches(self._dummy, pin)
                return False
            return await pin_matches(pin_hash, pin)
        finally:
            self.checking -= 1
            self.checked += 1

    async def failed(self, staff_id: str, known: bool, window: int, address: str) -> None:
        n = self.failures.pop(staff_id, 0) + 1
        self.failures[staff_id] = n
        while len(self.failures) > MAX_KEYS:
            self.failures.popitem(last=False)
        events = [DomainEvent("staff.login_failed", {
            "staff": staff_id, "known": known, "window": window, "address": address,
            "failures": n})]
        if n >= self.cfg.max_failures:
            until = self.rt.clock.now() + timedelta(minutes=self.cfg.lock_minutes)
            self.locked_until[staff_id] = until.timestamp()
            self.failures.pop(staff_id, None)
            events.append(DomainEvent("staff.locked", {
                "staff": staff_id, "known": known, "failures": n, "address": address,
                "until": rfc3339(self.rt.hall.local(until))}))
        await self.rt.record(events)

    def succeeded(self, staff_id: str) -> None:
        self.failures.pop(staff_id, None)


class TicketGuard:
    """Tickets without a kiosk token, per client address and time."""

    def __init__(self, rt: HallRuntime, cfg: ApiSection) -> None:
        self.cfg = cfg.tickets
        self.window = RateWindow(self.cfg.anonymous_per_address, self.cfg.per_minutes * 60,
                                 rt.clock)
        self.notices = LimitNotices(rt, "tickets", self.cfg.anonymous_per_address,
                                    self.cfg.per_minutes * 60)

    def before(self, address: str) -> None:
        """Take a slot now, before the ticket is issued: requests in flight count, so a
        burst sent at once gets no more than the limit. `not_issued` gives it back."""
        wait = self.window.retry_after(address)
        if wait is not None:
            self.notices.refused(address, wait)
            raise Refusal(429, "too-many-tickets", f"{self.cfg.anonymous_per_address} "
                          f"tickets per {self.cfg.per_minutes:g} min from one address; please "
                          f"use a kiosk, or try again in {wait} s",
                          headers={"Retry-After": str(wait)})
        self.window.hit(address)

    def not_issued(self, address: str) -> None:
        """The request took a slot but got no new ticket (refused, or an idempotent retry)."""
        self.window.unhit(address)


class EvaluatorGuard:
    """Failed tablet logins per client address and per window, across connections."""

    def __init__(self, rt: HallRuntime, cfg: ApiSection) -> None:
        lim = cfg.limits
        self.window = RateWindow(lim.evaluator_failures, lim.evaluator_per_minutes * 60,
                                 rt.clock)
        self.notices = LimitNotices(rt, "evaluator-token", lim.evaluator_failures,
                                    lim.evaluator_per_minutes * 60)

    def retry_after(self, address: str, window: Any) -> int | None:
        waits = [self.window.retry_after(f"a:{address}")]
        if isinstance(window, int):
            waits.append(self.window.retry_after(f"w:{window}"))
        found = [w for w in waits if w is not None]
        if not found:
            return None
        self.notices.refused(address, max(found))
        return max(found)

    def failed(self, address: str, window: Any) -> None:
        self.window.hit(f"a:{address}")
        if isinstance(window, int):
            self.window.hit(f"w:{window}")


class Guards:
    def __init__(self, rt: HallRuntime) -> None:
        cfg = rt.config.api
        self.logins = LoginGuard(rt, cfg)
        self.tickets = TicketGuard(rt, cfg)
        self.evaluators = EvaluatorGuard(rt, cfg)
