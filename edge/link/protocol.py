"""The MQTT contract shared by the box and the central side: topics and signed commands.

A command is signed with HMAC-SHA256 over the canonical JSON of everything that gives it
meaning (site, box, name, id, times, args), so a signed command cannot be moved to another
box or renamed, and a replayed one is caught by its id.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.events import canonical_json, rfc3339, uuid7

ROOT = "hallbox/v1"
EVENTS_SHARED = "$share/ingest/hallbox/v1/+/+/events/#"


def root(site: str, box: str) -> str:
    return f"{ROOT}/{site}/{box}"


def topic_status(site: str, box: str) -> str:
    return f"{root(site, box)}/status"


def topic_event(site: str, box: str, type_: str) -> str:
    return f"{root(site, box)}/events/{type_}"


def topic_health(site: str, box: str, device: str) -> str:
    return f"{root(site, box)}/health/{device}"


def topic_cmd(site: str, box: str, name: str) -> str:
    return f"{root(site, box)}/cmd/{name}"


def topic_reply(site: str, box: str, request_id: str) -> str:
    return f"{root(site, box)}/reply/{request_id}"


def split_topic(topic: str) -> tuple[str, str, str, str] | None:
    """'hallbox/v1/{site}/{box}/{kind}/{rest}' -> (site, box, kind, rest); None if foreign."""
    parts = topic.split("/", 5)
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != ROOT:
        return None
    return parts[2], parts[3], parts[4], parts[5] if len(parts) > 5 else ""


def signing_bytes(site: str, box: str, name: str, cmd: dict[str, Any]) -> bytes:
    return canonical_json({
        "site": site, "box": box, "name": name, "id": cmd.get("id"),
        "issued_at": cmd.get("issued_at"), "expires_at": cmd.get("expires_at"),
        "args": cmd.get("args"),
    })


def sign(key: str, site: str, box: str, name: str, cmd: dict[str, Any]) -> str:
    return hmac.new(key.encode("utf-8"), signing_bytes(site, box, name, cmd),
                    hashlib.sha256).hexdigest()


def signature_ok(key: str, site: str, box: str, name: str, cmd: dict[str, Any]) -> bool:
    sig = cmd.get("sig")
    # compare_digest takes ASCII strings only; a lone surrogate ("\\udc00" in the JSON) has
    # no UTF-8 form to sign: both are refusals, not errors.
    if not isinstance(sig, str) or not sig.isascii():
        return False
    try:
        expected = sign(key, site, box, name, cmd)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, sig)


def make_command(key: str, site: str, box: str, name: str, args: dict[str, Any] | None = None,
                 *, ttl_s: int = 60, now: datetime | None = None,
                 command_id: str | None = None) -> dict[str, Any]:
    """A signed command payload as the central room sends it."""
    t = (now or datetime.now(UTC)).astimezone(UTC)
    cmd: dict[str, Any] = {
        "id": command_id or uuid7(),
        "issued_at": rfc3339(t),
        "expires_at": rfc3339(t + timedelta(seconds=ttl_s)),
        "args": args or {},
    }
    cmd["sig"] = sign(key, site, box, name, cmd)
    return cmd


def reply_sig(key: str, reply: dict[str, Any]) -> str:
    """The box signs its replies with the same key, so the centre knows who answered."""
    body = {k: v for k, v in reply.items() if k != "sig"}
    return hmac.new(key.encode("utf-8"), canonical_json(body), hashlib.sha256).hexdigest()
