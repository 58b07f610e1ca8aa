"""In-process fan-out of committed events: printers, boards, pages, the MQTT sender.

Subscribers run after the commit, never inside the transaction, and one failing subscriber
never stops the others or the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Envelope = dict[str, Any]
Subscriber = Callable[[Envelope], None]


class EventBus:
    def __init__(self) -> None:
        self._subs: list[tuple[str, Subscriber]] = []
        self._failing: set[str] = set()

    def subscribe(self, name: str, fn: Subscriber) -> Callable[[], None]:
        entry = (name, fn)
        self._subs.append(entry)
        return lambda: self._subs.remove(entry) if entry in self._subs else None

    def publish(self, envelopes: list[Envelope]) -> None:
        for env in envelopes:
            for name, fn in list(self._subs):
                try:
                    fn(env)
                except Exception:
                    # Log the first failure and the recovery, not every repeat.
                    if name not in self._failing:
                        self._failing.add(name)
                        log.exception("subscriber %s failed on %s", name, env.get("type"))
                else:
                    if name in self._failing:
                        self._failing.discard(name)
                        log.info("subscriber %s recovered", name)
