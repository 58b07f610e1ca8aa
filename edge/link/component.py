"""`hallbox run` builder for the link: nothing without a broker (the outbox simply waits)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.components import Component, RunContext

log = logging.getLogger(__name__)


def build_link(ctx: RunContext) -> list[Component]:
    cfg = ctx.runtime.config.mqtt
    if cfg is None:
        log.info("no [mqtt] broker configured: events wait in the outbox (%d unsent)",
                 ctx.runtime.store.outbox_pending())
        return []
    from edge.link.sender import Link

    return [Link(ctx.runtime, cfg)]
