"""`hallbox`: run the box, check a config, verify a journal."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import sys
from pathlib import Path

from edge import logs, service, systemd
from edge.backup import BoxLock
from edge.central.cli import add_central_parser
from edge.config import ConfigError, HallConfig, load_config
from edge.ops_cli import add_ops_parsers
from edge.resources import example_config

DEFAULT_CONFIG = example_config()
log = logging.getLogger("hallbox")


def _config_or_exit(path: str) -> HallConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        # An error may quote a value, e.g. a broker URL with its password in it.
        print(logs.REDACT(str(e)), file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _config_or_exit(args.file)
    print(f"{args.file}: ok ({len(cfg.services)} services, {len(cfg.windows)} windows, "
          f"{len(cfg.staff)} staff)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edge.verify import verify_db

    path = Path(args.db)
    if path.is_dir():
        path = path / "hallbox.db"
    r = verify_db(path)
    if r.ok:
        print(f"{path}: intact, {r.events} events, head seq {r.head_seq} hash {r.head_hash}")
        return 0
    print(f"{path}: BROKEN at seq {r.broken_seq}: {r.reason} "
          f"({r.events} events verified before it)")
    return 1


def cmd_hash_pin(args: argparse.Namespace) -> int:
    from argon2 import PasswordHasher

    pin = args.pin or getpass.getpass("PIN: ")
    print(PasswordHasher().hash(pin))
    return 0


async def _serve(args: argparse.Namespace, cfg: HallConfig, data: Path) -> None:
    import uvicorn

    from edge.api.serve import AcceptErrors, server_config
    from edge.assembly import build_box, installed_plugins

    box = build_box(cfg, data, plugins=[] if args.no_devices else installed_plugins(),
                    sim=args.sim, devices=not args.no_devices, ignore_hours=args.ignore_hours)
    host = args.host or cfg.api.host
    port = args.port or cfg.api.port
    # the daily backup, supervised like every component.
    box.components += service.backup_components(box.runtime)
    # frame size, connection cap and accept errors (edge.api.serve). Pages keep event
    # streams open (boards, consoles): without a bound, a stop would wait for every screen in
    # the hall to disconnect.
    server = uvicorn.Server(server_config(box.app, cfg.api, host, port,
                                          timeout_graceful_shutdown=3))
    AcceptErrors(asyncio.get_running_loop())

    async def announce() -> None:
        await service.announce_ready(server, host, port)
        log.info("hallbox %s/%s serving http://%s:%d (data %s)", cfg.hall.site, cfg.hall.box,
                 host, port, data)

    await box.start()
    log.debug("start-up heap frozen: %d objects", service.freeze_startup_heap())
    tasks = [asyncio.create_task(announce())]
    # systemd's watchdog, pinging only while the loop, the store's writer and the
    # component supervisors are alive.
    watchdog = service.start_watchdog(service.liveness_checks(box))
    if watchdog is not None:
        tasks.append(watchdog)
    try:
        await server.serve()
    finally:
        systemd.notify("STOPPING=1")
        for t in tasks:
            t.cancel()
        await box.stop()
        box.close()


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config_or_exit(args.config)
    # Absolute: simulators publish device paths from it in sim.json, drivers open them.
    data = Path(args.data or os.environ.get("HALLBOX_DATA") or "var").resolve()
    data.mkdir(parents=True, exist_ok=True)
    # one box per data directory; `hallbox restore` refuses while this is held.
    lock = BoxLock(data)
    if not lock.acquire():
        print(f"another hallbox is running on {data}", file=sys.stderr)
        return 1
    logs.REDACT.add(logs.config_secrets(cfg))
    # uvicorn shuts down gracefully on SIGTERM and then re-raises it; make that a clean exit 0
    # so systemd and tests see an orderly stop, not a kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.ignore_hours:
        log.warning("opening hours are ignored (demo mode): tickets can be taken at any time")
    try:
        asyncio.run(_serve(args, cfg, data))
    finally:
        lock.release()
    return 0


def cmd_cameras_discover(args: argparse.Namespace) -> int:
    """WS-Discovery: unicast to --host, or multicast on the LAN (never beyond: TTL 1)."""
    from edge.recorder.discovery import discover

    found = asyncio.run(discover(args.host, args.port, args.timeout))
    for m in found:
        if args.json:
            print(json.dumps({"address": m.address, "xaddrs": m.xaddrs, "from": m.source,
                              "scopes": m.scopes}, ensure_ascii=False))
        else:
            print(f"{m.source}\t{' '.join(m.xaddrs)}\t{m.address}")
    if not found:
        print("no ONVIF camera answered", file=sys.stderr)
    return 0 if found else 1


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    p = argparse.ArgumentParser(prog="hallbox", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the box")
    r.add_argument("--config", default=os.environ.get("HALLBOX_CONFIG", str(DEFAULT_CONFIG)))
    r.add_argument("--data", help="data directory (default ./var or $HALLBOX_DATA)")
    r.add_argument("--sim", action="store_true", help="start simulated devices")
    r.add_argument("--host")
    r.add_argument("--port", type=int)
    r.add_argument("--no-devices", action="store_true",
                   help="start no device drivers (queue, API and link only)")
    r.add_argument("--ignore-hours", action="store_true",
                   help="take tickets outside opening hours (demo)")
    r.set_defaults(fn=cmd_run)
    c = sub.add_parser("check-config", help="validate a hall config; exit 2 on errors")
    c.add_argument("file")
    c.set_defaults(fn=cmd_check_config)
    v = sub.add_parser("verify", help="verify a journal's hash chain; exit 1 if broken")
    v.add_argument("db", help="hallbox.db or the data directory")
    v.set_defaults(fn=cmd_verify)
    h = sub.add_parser("hash-pin", help="make an argon2 hash for a staff PIN")
    h.add_argument("pin", nargs="?")
    h.set_defaults(fn=cmd_hash_pin)
    cam = sub.add_parser("cameras", help="ONVIF cameras")
    cam_sub = cam.add_subparsers(dest="cameras_cmd", required=True)
    d = cam_sub.add_parser("discover", help="WS-Discovery probe for ONVIF cameras")
    d.add_argument("--host", help="probe this host only (unicast); default: multicast")
    d.add_argument("--port", type=int, default=3702)
    d.add_argument("--timeout", type=float, default=3.0)
    d.add_argument("--json", action="store_true", help="one JSON object per camera")
    d.set_defaults(fn=cmd_cameras_discover)
    add_central_parser(sub)
    add_ops_parsers(sub)  # doctor, backup, restore, example-config
    args = p.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
