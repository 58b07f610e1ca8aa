"""`hallbox central ingest`, `cmd` and `stats` (wired into edge/cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _central_broker(args: argparse.Namespace) -> object:
    from edge.central.client import CentralBroker

    url = args.url or os.environ.get("HALLBOX_CENTRAL_URL") or os.environ.get("HALLBOX_MQTT_URL")
    if not url:
        print("no broker: give --url or set HALLBOX_CENTRAL_URL", file=sys.stderr)
        raise SystemExit(2)
    return CentralBroker(url, args.ca, args.cert, args.cert_key)


def cmd_central_ingest(args: argparse.Namespace) -> int:
    from edge.central.ingest import Ingest, load_keys

    keys = load_keys(args.keys, args.key or os.environ.get("HALLBOX_CMD_KEY"))
    ing = Ingest(_central_broker(args), args.db, keys=keys,  # type: ignore[arg-type]
                 client_id=args.client_id, group=args.group, gap_interval_s=args.gap_interval,
                 replay_backoff_s=args.replay_backoff)
    try:
        ing.run()
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_args(items: list[str]) -> dict[str, object]:
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        return dict(json.loads(items[0]))
    out: dict[str, object] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit(f"argument {it!r}: expected key=value or one JSON object")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def cmd_central_cmd(args: argparse.Namespace) -> int:
    from edge.central.client import send_command
    from edge.central.ingest import load_keys

    site, sep, box = args.box.partition("/")
    if not sep:
        print("BOX is site/box, e.g. gz-tianhe/box-01", file=sys.stderr)
        return 2
    keys = load_keys(args.keys, args.key or os.environ.get("HALLBOX_CMD_KEY"))
    key = keys.get(args.box) or keys.get("*")
    if not key:
        print(f"no command key for {args.box}: give --key or --keys", file=sys.stderr)
        return 2
    reply = send_command(_central_broker(args), key, site, box, args.name,  # type: ignore[arg-type]
                         _cmd_args(args.args), timeout=args.timeout, protocol=args.protocol)
    if reply is None:
        print(f"no reply within {args.timeout} s", file=sys.stderr)
        return 3
    print(json.dumps(reply, ensure_ascii=False, indent=2))
    return 0 if reply.get("ok") else 1


def cmd_central_stats(args: argparse.Namespace) -> int:
    """The box's statistics recomputed from the central database, by the same pure module."""
    from datetime import date

    from edge.central.store import CentralStore
    from edge.domain import stats
    from edge.domain.errors import DomainError

    site, sep, box = args.box.partition("/")
    if not sep:
        print("BOX is site/box, e.g. gz-tianhe/box-01", file=sys.stderr)
        return 2
    try:
        start, end = date.fromisoformat(args.from_), date.fromisoformat(args.to)
        stats.check_range(start, end, args.by)
    except ValueError as e:
        print(f"--from/--to: {e}", file=sys.stderr)
        return 2
    except DomainError as e:
        print(f"--{e.subject}: {e.detail}", file=sys.stderr)
        return 2
    store = CentralStore(args.db)
    try:
        lo, hi = stats.day_bounds(start, end, args.tz)
        types = [t for t in stats.TYPES if t != "attendance.recorded"]
        envs = store.events_of(site, box, types, lo, hi, always=["attendance.recorded"])
    finally:
        store.close()
    out = stats.compute(envs, tz=args.tz, start=start, end=end, by=args.by)
    print(json.dumps(out, ensure_ascii=False, indent=2, sort_keys=True))
    return 0


def add_central_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cen = sub.add_parser("central", help="the reference central side")
    csub = cen.add_subparsers(dest="central_cmd", required=True)

    def broker_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="mqtt://user:pass@host:port (or $HALLBOX_CENTRAL_URL)")
        p.add_argument("--ca", help="CA file for mqtts://")
        p.add_argument("--cert", help="client certificate")
        p.add_argument("--cert-key", help="client certificate's private key")
        p.add_argument("--keys", help='JSON file {"site/box": "command key", ...}')
        p.add_argument("--key", help="one command key for every box (or $HALLBOX_CMD_KEY)")

    ing = csub.add_parser("ingest", help="store every box's events in PostgreSQL or SQLite")
    broker_opts(ing)
    ing.add_argument("--db", required=True,
                     help="postgresql://... or a SQLite file path for a single-machine trial")
    ing.add_argument("--client-id", help="stable id: a persistent session survives restarts")
    ing.add_argument("--group", default="ingest", help="shared subscription group")
    ing.add_argument("--gap-interval", type=float, default=2.0,
                     help="seconds between looks for holes in each box's sequence")
    ing.add_argument("--replay-backoff", type=float, default=10.0,
                     help="seconds before the same box is asked for a replay again")
    ing.set_defaults(fn=cmd_central_ingest)
    cmd = csub.add_parser("cmd", help="send a signed command to a box and print its reply")
    broker_opts(cmd)
    cmd.add_argument("box", help="site/box")
    cmd.add_argument("name", help="replay, health.get, config.get, display.message, ...")
    cmd.add_argument("args", nargs="*", help="key=value (JSON values) or one JSON object")
    cmd.add_argument("--timeout", type=float, default=10.0)
    cmd.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    cmd.set_defaults(fn=cmd_central_cmd)
    st = csub.add_parser("stats", help="a box's statistics from the central database")
    st.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    st.add_argument("box", help="site/box")
    st.add_argument("--from", dest="from_", required=True, help="YYYY-MM-DD (hall date)")
    st.add_argument("--to", required=True, help="YYYY-MM-DD, at most a year after --from")
    st.add_argument("--by", default="window", help="window, staff, service, day or month")
    st.add_argument("--tz", default="Asia/Shanghai", help="the hall's time zone")
    st.set_defaults(fn=cmd_central_stats)
