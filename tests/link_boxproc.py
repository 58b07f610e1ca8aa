"""A box in its own process, for the SIGKILL tests: emits events and prints each committed seq.

usage: python link_boxproc.py DATA_DIR URL BOX COUNT   (COUNT 0: just drain, then exit)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from link_fixtures import box_config

from edge.domain.model import DomainEvent
from edge.link.sender import Link
from edge.runtime import HallRuntime


async def main(data: str, url: str, box: str, count: int) -> None:
    cfg = box_config(box, url, inflight=10, batch=20)
    rt = HallRuntime.open(cfg, data, ignore_hours=True)
    link = Link(rt, cfg.mqtt)
    await link.start()
    print("started", rt.store.head_seq, flush=True)
    for i in range(count):
        env = rt.emit([DomainEvent("display.message", {
            "command_id": f"p-{i}", "text": f"notice {i}", "seconds": 60, "target": "main"})])
        print("committed", env[0]["seq"], flush=True)
        await asyncio.sleep(0.002)
    while rt.store.outbox_pending():
        await asyncio.sleep(0.02)
    await link.stop()
    rt.close()
    print("drained", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
