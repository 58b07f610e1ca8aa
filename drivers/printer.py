"""Queue-ticket printers: `ticket.issued` → an ESC/POS ticket on the kiosk's printer.

Before each ticket the driver asks the printer for its paper state (DLE EOT 2 and 4, input
flushed first, short timeout). Paper near end: the ticket prints, health grade C. Paper end or
cover open: nothing is sent, health grade B, and the kiosk response tells the applicant to
photograph the on-screen number. The ticket is issued in every case: printing happens after
the commit and never blocks or undoes it. A printer that does not answer the status query is
still sent the ticket (some USB printers never answer), reported as "unverified".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from drivers.base import DeviceHealthReporter, DeviceOffline, Endpoint, Link
from drivers.protocols.escpos import (
    PaperState,
    PrinterStatus,
    TicketContent,
    parse_status,
    status_request,
    ticket_bytes,
)
from edge.config.calling_devices import PrinterConfig
from edge.runtime import HallRuntime

log = logging.getLogger(__name__)

STATUS_TIMEOUT_S = 0.3
POLL_INTERVAL_S = 10.0  # idle status poll, so paper near end shows before the next ticket
MSG_TAKE = "请取走您的号票"
MSG_NEAR_END = "请取走您的号票（打印纸即将用完）"
MSG_PHOTO = "请拍照保存屏幕上的号码"
REASONS = {
    PaperState.END: "打印机缺纸",
    PaperState.COVER_OPEN: "打印机盖未关好",
    PaperState.OFFLINE: "打印机故障",
}
PRINTED_SOURCES = ("kiosk", "app")  # desk tickets and transfers are handed over by staff


def ticket_content(rt: HallRuntime, cfg: PrinterConfig, env: dict[str, Any]) -> TicketContent:
    d = env["data"]
    when = datetime.fromisoformat(env["ts"])
    note = {"green": "绿色通道", "appointment": "预约"}.get(d.get("priority", ""))
    svc = rt.config.service(d["service"])
    return TicketContent(
        hall=rt.config.hall.name, service=svc.name, number=d["number"], ahead=d["ahead"],
        est_wait_min=(d["est_wait_ms"] + 59_999) // 60_000,
        time=when.strftime("%Y-%m-%d %H:%M"),
        qr_payload=cfg.qr_url.format(ticket=d["ticket"], number=d["number"]),
        footer=cfg.footer, priority_note=note,
    )


class TicketPrinter:
    """One printer: a supervised link, a job queue, paper status, health."""

    def __init__(self, rt: HallRuntime, cfg: PrinterConfig,
                 port: Endpoint | str | None = None) -> None:
        self.rt = rt
        self.cfg = cfg
        self.name = f"printer-{cfg.id}"
        self.health = DeviceHealthReporter(rt, cfg.id, "printer", offline_grade="B")
        self.link = Link(self.name, port or cfg.port, baudrate=cfg.baudrate,
                         on_up=self._on_up, on_down=self._on_down)
        self.status: PrinterStatus | None = None
        self.printed = 0
        self.not_printed = 0
        self.jobs: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.outcomes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._worker: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._last_detail = ""

    def metrics(self) -> dict[str, int]:
        return {"printed": self.printed, "not_printed": self.not_printed,
                "reconnects": max(0, self.link.connects - 1)}

    async def start(self) -> None:
        await self.link.start()
        self._worker = asyncio.create_task(self._work(), name=self.name)
        self._poller = asyncio.create_task(self._poll(), name=f"{self.name}-poll")

    async def stop(self) -> None:
        for t in (self._worker, self._poller):
            if t:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await self.link.stop()

    # ---- link events --------------------------------------------------------------------
    def _on_up(self) -> None:
        self.health.ok("connected", self.metrics())
        # Learn the paper state now rather than at the next ticket.
        asyncio.get_running_loop().create_task(self._refresh_status())

    def _on_down(self, reason: str) -> None:
        self.status = None
        self.health.offline(reason, self.metrics())

    # ---- jobs ---------------------------------------------------------------------------
    def submit(self, env: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        ticket = env["data"]["ticket"]
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.outcomes[ticket] = fut
        # Forget old outcomes: only the kiosk's request right after issuing reads them.
        while len(self.outcomes) > 256:
            self.outcomes.pop(next(iter(self.outcomes)))
        self.jobs.put_nowait((ticket, env))
        return fut

    async def _work(self) -> None:
        while True:
            ticket, env = await self.jobs.get()
            try:
                result = await self._print(env)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # one bad job never stops the printer
                log.exception("%s: printing %s failed", self.name, ticket)
                result = self._notice(False, "error", f"{e}")
            fut = self.outcomes.get(ticket)
            if fut is not None and not fut.done():
                fut.set_result(result)

    def _notice(self, printed: bool, status: str, detail: str = "") -> dict[str, Any]:
        if printed:
            msg = MSG_NEAR_END if status == PaperState.NEAR_END else MSG_TAKE
        else:
            try:
                reason = REASONS.get(PaperState(status), "打印机暂不可用")
            except ValueError:
                reason = "打印机暂不可用"
            msg = f"{reason}，{MSG_PHOTO}"
        out: dict[str, Any] = {"printer": self.cfg.id, "printed": printed, "status": str(status),
                               "message": msg}
        if detail:
            out["detail"] = detail
        return out

    async def _print(self, env: dict[str, Any]) -> dict[str, Any]:
        if not self.link.online:
            self.not_printed += 1
            return self._notice(False, PaperState.OFFLINE, "printer not connected")
        st = await self._refresh_status()
        if st is not None and st.state in (PaperState.END, PaperState.COVER_OPEN):
            self.not_printed += 1
            return self._notice(False, st.state)
        data = ticket_bytes(ticket_content(self.rt, self.cfg, env), qr=self.cfg.qr,
                            width_chars=self.cfg.width_chars)
        try:
            self.link.send(data)
            await self.link.drain()
        except (DeviceOffline, TimeoutError) as e:
            self.not_printed += 1
            return self._notice(False, PaperState.OFFLINE, str(e))
        self.printed += 1
        if st is None:
            return self._notice(True, "unverified", "no status reply")
        return self._notice(True, st.state)

    async def _refresh_status(self) -> PrinterStatus | None:
        """DLE EOT 2 and 4; None when the printer does not answer (or went away)."""
        try:
            off = await self.link.request(status_request(2), 1, STATUS_TIMEOUT_S)
            paper = await self.link.request(status_request(4), 1, STATUS_TIMEOUT_S)
            st = parse_status(off[0], paper[0])
        except (DeviceOffline, TimeoutError, ValueError):
            self.status = None
            return None
        self.status = st
        self._report_status(st)
        return st

    def _report_status(self, st: PrinterStatus) -> None:
        if not self.link.online:
            return
        state = st.state
        if state == PaperState.OK:
            self.health.ok("ready", self.metrics())
        elif state == PaperState.NEAR_END:
            self.health.degraded("C", "paper near end", self.metrics())
        else:
            self.health.degraded("B", state.value.replace("_", " "), self.metrics())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            if self.link.online and self.jobs.empty():
                await self._refresh_status()


class PrintDeskImpl:
    """Routes tickets to printers (by kiosk) and answers the kiosk route's outcome query."""

    name = "print-desk"

    def __init__(self, rt: HallRuntime, printers: list[TicketPrinter]) -> None:
        self.rt = rt
        self.printers = printers
        # ticket id -> the kiosk that asked for it, noted while the ticket is issued and used
        # when its committed event arrives (after the group commit).
        self._kiosk_of: dict[str, str | None] = {}
        self._by_kiosk = {p.cfg.kiosk: p for p in printers}
        self._unsub: Any = None

    async def start(self) -> None:
        self._unsub = self.rt.bus.subscribe(self.name, self._on_event)

    async def stop(self) -> None:
        if self._unsub:
            self._unsub()

    def expect(self, ticket_id: str, kiosk: str | None) -> None:
        """The API names the kiosk while the ticket is issued, before its event is published."""
        if len(self._kiosk_of) > 10_000:  # tickets never published (a failed commit)
            self._kiosk_of.clear()
        self._kiosk_of[ticket_id] = kiosk

    def printer_for(self, kiosk: str | None) -> TicketPrinter | None:
        return self._by_kiosk.get(kiosk) or self._by_kiosk.get(None) or \
            (self.printers[0] if self.printers else None)

    def _on_event(self, env: dict[str, Any]) -> None:
        if env["type"] != "ticket.issued":
            return
        d = env["data"]
        if d.get("source") not in PRINTED_SOURCES or d.get("transferred_from"):
            return
        p = self.printer_for(self._kiosk_of.pop(d["ticket"], None))
        if p is not None:
            p.submit(env)

    async def outcome(self, ticket_id: str, timeout: float) -> dict[str, Any] | None:
        fut = next((p.outcomes[ticket_id] for p in self.printers if ticket_id in p.outcomes),
                   None)
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return {"printer": None, "printed": False, "status": "pending",
                    "message": f"号票正在打印，如未出票{MSG_PHOTO}"}
