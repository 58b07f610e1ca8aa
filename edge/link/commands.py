"""Commands from the central room: cmd/{name}, signed, fresh, once; a reply for every one.

The handler table is built by the assembly (`builtin_commands()` plus what features add to
`HallServices.commands`); a handler gets a `CommandContext` and the command's `args` and returns
a JSON-able dict (or raises `CommandError(code, detail)` for a clear refusal). Handlers run on
the loop thread and may be async. Validation order: well-formed -> signature -> fresh -> not
seen before -> known name -> args -> run. Every refusal is journalled as `command.rejected`;
every accepted command as `command.executed`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from edge.config.mqtt import MqttSection
from edge.domain.errors import DomainError
from edge.domain.model import DomainEvent
from edge.events import rfc3339
from edge.link import protocol as P
from edge.store import Store

if TYPE_CHECKING:
    from edge.link.sender import Link
    from edge.runtime import HallRuntime

log = logging.getLogger(__name__)
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CommandError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class CommandContext:
    rt: HallRuntime
    link: Link | None
    command_id: str
    name: str
    services: Any = None  # edge.assembly.HallServices


Handler = Callable[[CommandContext, dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]


def add_command(table: dict[str, Handler], name: str, handler: Handler) -> None:
    """Add a command to a table; a second one of the same name is a programming error."""
    if name in table:
        raise ValueError(f"command {name!r} is already registered")
    if not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", name):
        raise ValueError(f"bad command name {name!r}")
    table[name] = handler


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _args(model: type[Args], args: dict[str, Any]) -> Any:
    try:
        return model.model_validate(args)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'args'}: {err['msg']}"
                         for err in e.errors())
        raise CommandError("bad-args", msgs) from None


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise CommandError("malformed", f"{field} must be an RFC 3339 string")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError("malformed", f"{field} is not RFC 3339: {value!r}") from None
    if t.tzinfo is None:
        raise CommandError("malformed", f"{field} has no UTC offset")
    return t


class CommandRouter:
    def __init__(self, rt: HallRuntime, cfg: MqttSection, link: Link | None,
                 handlers: dict[str, Handler], services: Any = None) -> None:
        self.rt, self.cfg, self.link = rt, cfg, link
        self.handlers = handlers
        self.services = services
        self.site, self.box = rt.config.hall.site, rt.config.hall.box

    def prune(self) -> None:
        """Ids older than the acceptance window can never be accepted again anyway."""
        now = int(self.rt.clock.now().timestamp())
        horizon = now - self.cfg.command_max_age_s - self.cfg.command_skew_s - 60
        self.rt.store.write(Store.prune_commands(horizon))

    def _reply(self, cmd_id: str | None, name: str, ok: bool, result: dict[str, Any] | None,
               code: str | None = None, detail: str | None = None) -> dict[str, Any]:
        reply: dict[str, Any] = {"id": cmd_id, "command": name, "ok": ok, "site": self.site,
                                 "box": self.box, "ts": rfc3339(self.rt.hall.local())}
        if ok:
            reply["result"] = result or {}
        else:
            reply["error"] = {"code": code, "detail": detail}
        if self.cfg.command_key:
            reply["sig"] = P.reply_sig(self.cfg.command_key, reply)
        return reply

    def _refuse(self, cmd_id: str | None, name: str, code: str, detail: str) -> dict[str, Any]:
        log.warning("command %s (%s) refused: %s: %s", name, cmd_id, code, detail)
        try:
            self.rt.post([DomainEvent("command.rejected", {
                "id": cmd_id, "command": name[:64], "reason": code, "detail": detail[:300]})])
        except Exception:
            log.exception("could not journal a refused command")
        return self._reply(cmd_id, name, False, None, code, detail)

    async def handle(self, name: str, payload: bytes) -> dict[str, Any]:
        import json

        try:
            cmd = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return self._refuse(None, name, "malformed", f"payload is not JSON: {e}")
        if not isinstance(cmd, dict):
            return self._refuse(None, name, "malformed", "payload must be a JSON object")
        raw_id = cmd.get("id")
        cmd_id = raw_id if isinstance(raw_id, str) and _ID.match(raw_id) else None
        missing = [k for k in ("id", "issued_at", "expires_at", "args", "sig") if k not in cmd]
        if missing:
            return self._refuse(cmd_id, name, "malformed", f"missing fields: {missing}")
        extra = sorted(set(cmd) - {"id", "issued_at", "expires_at", "args", "sig"})
        if extra:
            return self._refuse(cmd_id, name, "malformed", f"unknown fields: {extra}")
        if cmd_id is None:
            return self._refuse(None, name, "malformed",
                                "id must be 1-64 characters of A-Z a-z 0-9 _ . -")
        if not isinstance(cmd["args"], dict):
            return self._refuse(cmd_id, name, "malformed", "args must be an object")
        try:
            issued = _parse_time(cmd["issued_at"], "issued_at")
            expires = _parse_time(cmd["expires_at"], "expires_at")
        except CommandError as e:
            return self._refuse(cmd_id, name, e.code, e.detail)
        if not self.cfg.command_key:
            return self._refuse(cmd_id, name, "no-key",
                                "this box has no command_key configured; it takes no commands")
        if not P.signature_ok(self.cfg.command_key, self.site, self.box, name, cmd):
            return self._refuse(cmd_id, name, "bad-signature",
                                "the HMAC signature does not match this box's key")
        now = self.rt.clock.now()
        skew = timedelta(seconds=self.cfg.command_skew_s)
        if expires <= now:
            return self._refuse(cmd_id, name, "expired", f"the command expired at {expires}")
        if issued > now + skew:
            return self._refuse(cmd_id, name, "not-yet-valid",
                                f"issued_at {issued} is in the future")
        if now - issued > timedelta(seconds=self.cfg.command_max_age_s) + skew:
            return self._refuse(cmd_id, name, "stale",
                                f"issued more than {self.cfg.command_max_age_s} s ago")
        try:
            seen = await asyncio.wrap_future(self.rt.store.write(Store.claim_command(
                cmd_id, name, int(issued.timestamp()), rfc3339(now))))
        except Exception as e:
            return self._refuse(cmd_id, name, "failed", f"could not record the command id: {e}")
        if seen is not None:
            return self._refuse(cmd_id, name, "repeated",
                                f"command id {cmd_id} was already received")
        handler = self.handlers.get(name)
        if handler is None:
            return self._refuse(cmd_id, name, "unknown-command",
                                f"no command {name!r}; known: {sorted(self.handlers)}")
        ctx = CommandContext(self.rt, self.link, cmd_id, name, self.services)
        try:
            out = handler(ctx, cmd["args"])
            result = await out if inspect.isawaitable(out) else out
        except CommandError as e:
            return self._refuse(cmd_id, name, e.code, e.detail)
        except DomainError as e:
            return self._refuse(cmd_id, name, e.code, e.detail)
        except Exception as e:
            log.exception("command %s failed", name)
            return self._refuse(cmd_id, name, "failed", f"{type(e).__name__}: {e}")
        await self.rt.record([DomainEvent("command.executed", {"id": cmd_id, "command": name})])
        return self._reply(cmd_id, name, True, result)


# ---- the built-in commands -------------------------------------------------------------------
class ReplayArgs(Args):
    from_seq: int = Field(ge=1)
    to_seq: int | None = Field(default=None, ge=1)


def cmd_replay(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    a = _args(ReplayArgs, args)
    head = ctx.rt.store.head_seq
    if a.from_seq > head:
        raise CommandError("bad-args", f"from_seq {a.from_seq} is beyond the head {head}")
    to = min(a.to_seq or head, head)
    if to < a.from_seq:
        raise CommandError("bad-args", "to_seq is below from_seq")
    if ctx.link is None:
        raise CommandError("unavailable", "no link to replay on")
    n = ctx.link.request_replay(a.from_seq, to)
    return {"from_seq": a.from_seq, "to_seq": to, "count": n}


class AttendanceArgs(Args):
    from_: date = Field(alias="from")
    to: date
    limit: int = Field(default=5000, ge=1, le=20000)
    after_seq: int = Field(default=0, ge=0)


def cmd_attendance_pull(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Fingerprint punches (`punch.recorded` events of the attendance feature) by hall date.

    The date is the punch's own time (`data.at`, in the hall's time zone; the journal time when
    absent), so punches read back from a terminal's memory days later still count on the day
    they were made. A punch is never journalled before it happened, so rows journalled before
    `from` (less a day of clock slack) are skipped. Pages with `after_seq` when `truncated`.
    """
    from zoneinfo import ZoneInfo

    a = _args(AttendanceArgs, args)
    if a.to < a.from_:
        raise CommandError("bad-args", "to is before from")
    if (a.to - a.from_).days > 92:
        raise CommandError("bad-args", "at most 92 days per pull")
    tz = ZoneInfo(ctx.rt.config.hall.timezone)
    rows = ctx.rt.store.journal_of_type_since(
        "punch.recorded", a.after_seq, (a.from_ - timedelta(days=1)).isoformat())
    records: list[dict[str, Any]] = []
    truncated = False
    for seq, ts, env in rows:
        data = env["data"]
        at = data.get("at") if isinstance(data.get("at"), str) else ts
        try:
            day = datetime.fromisoformat(at).astimezone(tz).date()
        except ValueError:
            day = datetime.fromisoformat(ts).astimezone(tz).date()
        if a.from_ <= day <= a.to:
            if len(records) == a.limit:
                truncated = True
                break
            records.append({"seq": seq, "ts": ts, "data": data})
    return {"from": a.from_.isoformat(), "to": a.to.isoformat(), "count": len(records),
            "truncated": truncated, "records": records}


class DisplayArgs(Args):
    text: str = Field(min_length=1, max_length=200)
    seconds: int = Field(default=60, ge=5, le=86400)
    target: Literal["main", "all"] | int = "main"


async def cmd_display_message(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    a = _args(DisplayArgs, args)
    if isinstance(a.target, int) and a.target not in {w.number for w in ctx.rt.config.windows}:
        raise CommandError("bad-args", f"unknown window {a.target}")
    env = await ctx.rt.record([DomainEvent("display.message", {
        "command_id": ctx.command_id, "text": a.text, "seconds": a.seconds,
        "target": a.target, "source": "central"})])
    return {"seq": env[0]["seq"]}


class Booking(Args):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    service: str = Field(min_length=1, max_length=16)
    slot_start: AwareDatetime
    slot_end: AwareDatetime


class AppointmentsArgs(Args):
    appointments: list[Booking] = Field(min_length=1, max_length=500)


async def cmd_appointments_push(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    a = _args(AppointmentsArgs, args)
    results: list[dict[str, Any]] = []
    for b in a.appointments:
        try:
            await ctx.rt.run(lambda h, b=b: (None, h.book(b.code, b.service, b.slot_start,
                                                          b.slot_end)))
            results.append({"code": b.code, "ok": True})
        except DomainError as e:
            results.append({"code": b.code, "ok": False, "error": e.code, "detail": e.detail})
    return {"booked": sum(r["ok"] for r in results), "results": results}


_SECRET = re.compile(r"(hash|key|password|secret|token|pin)", re.I)


def redact(obj: Any) -> Any:
    """Drop secrets: hashes, keys, passwords, tokens, PINs, credentials inside urls."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if _SECRET.search(k) and v is not None else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str) and "://" in obj and "@" in obj:
        scheme, rest = obj.split("://", 1)
        return f"{scheme}://<redacted>@{rest.rsplit('@', 1)[1]}"
    return obj


def cmd_config_get(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _args(Args, args)
    return {"config": redact(ctx.rt.config.model_dump(mode="json"))}


def cmd_health_get(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _args(Args, args)
    return {"devices": ctx.rt.health.snapshot(),
            "link": ctx.link.snapshot() if ctx.link else None,
            "head": {"seq": ctx.rt.store.head_seq, "hash": ctx.rt.store.head_hash}}


def builtin_commands() -> dict[str, Handler]:
    """A fresh handler table with the box's own commands; features add theirs to it
    (supervision: spotcheck.start, attendance.summary, stats.get)."""
    table: dict[str, Handler] = {}
    for name, fn in (("replay", cmd_replay), ("attendance.pull", cmd_attendance_pull),
                     ("display.message", cmd_display_message),
                     ("appointments.push", cmd_appointments_push),
                     ("config.get", cmd_config_get), ("health.get", cmd_health_get)):
        add_command(table, name, fn)
    return table
