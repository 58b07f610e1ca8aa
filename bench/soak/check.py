"""The soak's verdict: what the hall acknowledged against what the box journalled and the
centre stored. Pure: it takes the evidence collected at the end and returns rows; a row that is
not ok is a loss (or a box that stopped serving) and makes the soak exit non-zero.

Checks, in the order printed:
- events: every journalled event is stored centrally (same seq, id and hash), nothing extra;
  a duplicate delivery counts only if it carried the same id (a different event under a held
  seq is a central chain break); the box's journal chain verifies, and so does the central copy.
- acknowledged: every ticket answered 200/201 is issued in the journal and centrally; every
  ticket the printer printed exists; every key press the keypad acknowledged OK and every API
  operation answered 200 has its event; every rating acknowledged with RATE_DONE is
  journalled; every punch the attendance terminal holds is recorded; every command answered ok
  took effect exactly once; forged commands took none, a replayed one did not take a second.
- recordings: each camera's segments cover the recording period except inside injected camera
  faults and box restarts (with the recorder's reconnect allowance), each gap is told by an
  event (camera.offline in it, or the camera.online gap that spans it), and every injected camera
  fault the box was alive for is reported: a camera.offline during it, or a camera.online whose
  reported gap spans it.
- statistics: the box's statistics API equals `hallbox central stats` for every dimension.
- the box: still serving, never died unasked; the injector's own problems (a forged command
  accepted, a 5xx to hostile traffic); every fault class at least `min_each` times.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.events import GENESIS_HASH, event_hash

RECONNECT_ALLOWANCE_S = 25.0  # the recorder's capped backoff (15 s) + a segment + startup


@dataclass
class Evidence:
    journal: list[dict[str, Any]]
    journal_verify: tuple[bool, str]
    central: list[dict[str, Any]]
    central_breaks: list[Any]
    ledger: dict[str, Any]
    printed: list[str]
    punches: list[tuple[str, str]]  # (terminal user id, local "YYYY-MM-DDTHH:MM:SS")
    segments: dict[str, list[tuple[float, float]]]
    camera_faults: list[tuple[str, float, float, str]]
    down_spans: list[tuple[float, float]]
    record_span: tuple[float, float]
    segment_seconds: float
    stats_box: dict[str, Any]
    stats_central: dict[str, Any]
    serving: bool
    crashes: list[str]
    fault_counts: dict[str, int]
    fault_classes: list[str]
    min_each: int
    injector_problems: list[str] = field(default_factory=list)
    duplicates_received: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    section: str
    item: str
    value: str
    ok: bool = True


def _ts(env: dict[str, Any]) -> float:
    return datetime.fromisoformat(env["ts"]).timestamp()


def chain_ok(envs: list[dict[str, Any]]) -> tuple[bool, str]:
    """Seq 1..N without holes, each hash over its content and each prev_hash its predecessor."""
    prev = GENESIS_HASH
    for i, e in enumerate(sorted(envs, key=lambda e: e["seq"]), start=1):
        if e["seq"] != i:
            return False, f"seq {i} missing"
        if e["prev_hash"] != prev:
            return False, f"seq {i}: prev_hash does not match seq {i - 1}"
        if event_hash(e) != e["hash"]:
            return False, f"seq {i}: hash does not match its content"
        prev = e["hash"]
    return True, f"{len(envs)} events, seq 1..{len(envs)}"


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def gaps(segs: list[tuple[float, float]], lo: float, hi: float,
         tolerance: float) -> list[tuple[float, float]]:
    """Holes longer than `tolerance` in the union of segments, within [lo, hi]."""
    out, cursor = [], lo
    for a, b in _merge([(max(a, lo), min(b, hi)) for a, b in segs if b > lo and a < hi]):
        if a - cursor > tolerance:
            out.append((cursor, a))
        cursor = max(cursor, b)
    if hi - cursor > tolerance:
        out.append((cursor, hi))
    return out


def check(ev: Evidence) -> list[Row]:
    rows: list[Row] = []
    add = rows.append
    led = ev.ledger

    # ---- events ------------------------------------------------------------------------------
    jby = {e["seq"]: e for e in ev.journal}
    cby = {e["seq"]: e for e in ev.central}
    missing = sorted(set(jby) - set(cby))
    extra = sorted(set(cby) - set(jby))
    differ = sorted(s for s in set(jby) & set(cby)
                    if (jby[s]["id"], jby[s]["hash"]) != (cby[s]["id"], cby[s]["hash"]))
    add(Row("events", "produced (box journal)", str(len(jby))))
    add(Row("events", "ingested (central)", str(len(cby)), not missing))
    add(Row("events", "lost (in journal, not central)",
            f"{len(missing)}" + (f" e.g. seq {missing[:5]}" if missing else ""), not missing))
    add(Row("events", "central events not in journal", str(len(extra)), not extra))
    add(Row("events", "same seq, different event", str(len(differ)), not differ))
    if ev.duplicates_received is not None:
        add(Row("events", "duplicate deliveries (same id, dropped)",
                str(ev.duplicates_received)))
    add(Row("events", "central chain breaks", str(len(ev.central_breaks)),
            not ev.central_breaks))
    add(Row("events", "box chain (hallbox verify)", ev.journal_verify[1], ev.journal_verify[0]))
    ok, why = chain_ok(ev.central)
    add(Row("events", "central chain verifies", why, ok and not missing))

    # ---- acknowledged things -------------------------------------------------------------------
    def of(envs: list[dict[str, Any]], typ: str) -> list[dict[str, Any]]:
        return [e for e in envs if e["type"] == typ]

    issued_j = {e["data"]["ticket"]: e["data"]["number"] for e in of(ev.journal, "ticket.issued")}
    issued_c = {e["data"]["ticket"] for e in of(ev.central, "ticket.issued")}
    acked = {**led["tickets"], **led["anonymous_tickets"]}
    lost_j = sorted(t for t in acked if issued_j.get(t) != acked[t])
    lost_c = sorted(t for t in acked if t not in issued_c)
    add(Row("acknowledged", "tickets acknowledged (kiosk + anonymous)",
            f"{len(led['tickets'])} + {len(led['anonymous_tickets'])}"))
    add(Row("acknowledged", "acknowledged tickets in journal",
            f"{len(acked) - len(lost_j)}/{len(acked)}", not lost_j))
    add(Row("acknowledged", "acknowledged tickets central",
            f"{len(acked) - len(lost_c)}/{len(acked)}", not lost_c))
    numbers = set(issued_j.values())
    unprinted = [n for n in ev.printed if n not in numbers]
    add(Row("acknowledged", "printed tickets issued in journal",
            f"{len(ev.printed) - len(unprinted)}/{len(ev.printed)}", not unprinted))

    kind = {"call": "ticket.called", "finish": "ticket.finished", "noshow": "ticket.no_show",
            "no_show": "ticket.no_show", "transfer": "ticket.transferred",
            "start": "ticket.started"}
    by_window: dict[tuple[int, str], list[float]] = {}
    by_ticket: set[tuple[str, str]] = set()
    for e in ev.journal:
        d = e["data"]
        if e["type"] in kind.values() and isinstance(d, dict) and "window" in d:
            by_window.setdefault((d["window"], e["type"]), []).append(_ts(e))
            by_ticket.add((d["ticket"], e["type"]))
    unseen_keys = [k for k in led["key_ops"]
                   if not any(k[2] - 1.0 <= t <= k[3] + 1.0
                              for t in by_window.get((k[0], kind[k[1]]), []))]
    add(Row("acknowledged", "keypad presses acknowledged OK with their event",
            f"{len(led['key_ops']) - len(unseen_keys)}/{len(led['key_ops'])}", not unseen_keys))
    unseen_api = [o for o in led["api_ops"] if (o[2], kind[o[1]]) not in by_ticket]
    add(Row("acknowledged", "API window operations answered 200 with their event",
            f"{len(led['api_ops']) - len(unseen_api)}/{len(led['api_ops'])}", not unseen_api))
    rated = {(e["data"]["window"], e["data"]["number"]) for e in of(ev.journal, "rating.submitted")}
    unrated = [r for r in led["ratings"] if (r[0], r[1]) not in rated]
    add(Row("acknowledged", "evaluator ratings acknowledged (RATE_DONE) journalled",
            f"{len(led['ratings']) - len(unrated)}/{len(led['ratings'])}", not unrated))
    recorded = Counter((e["data"]["user_id"], e["data"]["at"][:19])
                       for e in of(ev.journal, "punch.recorded"))
    punched = Counter(ev.punches)
    lost_p = punched - recorded
    add(Row("acknowledged", "punches held by the terminal recorded (none lost)",
            f"{sum(punched.values()) - sum(lost_p.values())}/{sum(punched.values())}",
            not lost_p))
    shown = Counter(e["data"].get("command_id") for e in of(ev.journal, "display.message"))
    not_once = [c for c in led["commands"] if shown[c] != 1]
    add(Row("acknowledged", "commands answered ok, effect exactly once",
            f"{len(led['commands']) - len(not_once)}/{len(led['commands'])}", not not_once))
    forged_in = [c for c in led["forged"] if shown[c]]
    add(Row("acknowledged", "forged/expired commands without effect",
            f"{len(led['forged']) - len(forged_in)}/{len(led['forged'])}", not forged_in))
    replay_twice = [c for c in led["replayed"] if shown[c] > 1]
    add(Row("acknowledged", "replayed commands not applied twice",
            f"{len(led['replayed']) - len(replay_twice)}/{len(led['replayed'])}",
            not replay_twice))

    # ---- recordings --------------------------------------------------------------------------
    lo, hi = ev.record_span
    seg = ev.segment_seconds
    down = [(a - 2 * seg, b + RECONNECT_ALLOWANCE_S) for a, b in ev.down_spans]
    offline = {}
    for e in of(ev.journal, "camera.offline"):
        offline.setdefault(e["data"]["camera"], []).append(_ts(e))
    reported_gaps: dict[str, list[tuple[float, float]]] = {}
    for e in of(ev.journal, "camera.online"):
        d = e["data"]
        if d.get("gap_from") and d.get("gap_to"):
            reported_gaps.setdefault(d["camera"], []).append(
                (datetime.fromisoformat(d["gap_from"]).timestamp(),
                 datetime.fromisoformat(d["gap_to"]).timestamp()))
    unexplained: list[str] = []
    silent: list[str] = []  # holes no event tells of
    explained = covered = span_total = 0.0
    n_gaps = 0
    for cam in sorted(ev.segments):
        faults = [(a - seg, b + RECONNECT_ALLOWANCE_S) for c, a, b, _ in ev.camera_faults
                  if c == cam]
        excuses = _merge(faults + down)
        holes = gaps(ev.segments[cam], lo, hi, tolerance=2 * seg + 1.5)
        span_total += hi - lo
        covered += (hi - lo) - sum(b - a for a, b in holes)
        for a, b in holes:
            n_gaps += 1
            if not (any(a - seg <= t <= b + seg for t in offline.get(cam, []))
                    or any(x < b and a < y for x, y in reported_gaps.get(cam, []))):
                silent.append(f"{cam} {datetime.fromtimestamp(a):%H:%M:%S}+{b - a:.0f}s")
            if any(x <= a and b <= y for x, y in excuses):
                explained += 1
            else:
                unexplained.append(f"{cam} {datetime.fromtimestamp(a):%H:%M:%S}"
                                   f"+{b - a:.0f}s")
    add(Row("recordings", "cameras, recording period",
            f"{len(ev.segments)} cameras, {(hi - lo) / 60:.1f} min each"))
    add(Row("recordings", "coverage", f"{100 * covered / max(span_total, 1):.1f}% "
            f"({n_gaps} gaps, {explained:.0f} inside injected faults or box restarts)"))
    add(Row("recordings", "gaps reported as events (camera.offline / online with its gap)",
            f"{n_gaps - len(silent)}/{n_gaps}"
            + (f"; silent: {', '.join(silent[:6])}" if silent else ""), not silent))
    add(Row("recordings", "gaps outside injected faults",
            str(len(unexplained)) + (f": {', '.join(unexplained[:6])}" if unexplained else ""),
            not unexplained))
    unreported, masked = [], 0
    for cam, a, b, cls in ev.camera_faults:
        if any(a <= t <= b + RECONNECT_ALLOWANCE_S for t in offline.get(cam, [])):
            continue
        # Reported as a gap when recording resumed (one outage with a box restart next to it
        # is one gap: the camera.online after the restart spans both).
        if any(x < b and a < y for x, y in reported_gaps.get(cam, [])):
            continue
        # A box down for part of the fault saw only the rest of it, or none.
        if any(x < b + RECONNECT_ALLOWANCE_S and a < y for x, y in ev.down_spans):
            masked += 1
            continue
        unreported.append(f"{cls} {cam} {datetime.fromtimestamp(a):%H:%M:%S}")
    add(Row("recordings", "camera faults reported as events",
            f"{len(ev.camera_faults) - len(unreported) - masked}/{len(ev.camera_faults)}"
            f" ({masked} overlapped a box restart)"
            + (f"; not reported: {', '.join(unreported[:6])}" if unreported else ""),
            not unreported))

    # ---- statistics -----------------------------------------------------------------------------
    dims = sorted(set(ev.stats_box) | set(ev.stats_central))
    differ_dims = [d for d in dims if ev.stats_box.get(d) != ev.stats_central.get(d)]
    total = (ev.stats_box.get("window") or {}).get("total", {})
    add(Row("statistics", "box API == central, by " + "/".join(dims),
            "equal" if not differ_dims and dims else f"differ: {differ_dims}",
            bool(dims) and not differ_dims))
    if total:
        add(Row("statistics", "box totals", f"tickets {total.get('tickets')}, served "
                f"{total.get('served')}, no-shows {total.get('no_shows')}, transferred "
                f"{total.get('transferred')}, unrated {total.get('unrated')}"))

    # ---- the box ------------------------------------------------------------------------------
    add(Row("box", "still serving at the end", "yes" if ev.serving else "NO", ev.serving))
    add(Row("box", "died without being killed", str(len(ev.crashes))
            + (f": {ev.crashes}" if ev.crashes else ""), not ev.crashes))
    for k, v in ev.resources.items():
        add(Row("box", k, str(v)))
    add(Row("faults", "injector problems", "; ".join(ev.injector_problems[:5]) or "none",
            not ev.injector_problems))
    for cls in ev.fault_classes:
        n = ev.fault_counts.get(cls, 0)
        add(Row("faults", cls, str(n), n >= ev.min_each))
    return rows


def render(rows: list[Row]) -> str:
    width = max(len(r.item) for r in rows) + 2
    out, section = [], None
    for r in rows:
        if r.section != section:
            section = r.section
            out.append(f"-- {section} " + "-" * (width + 30 - len(section)))
        mark = "ok  " if r.ok else "FAIL"
        out.append(f"{mark} {r.item:<{width}} {r.value}")
    return "\n".join(out)


def passed(rows: list[Row]) -> bool:
    return all(r.ok for r in rows)
