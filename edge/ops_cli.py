"""`hallbox doctor | backup | restore | example-config`: running the box in a hall."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edge.resources import example_file

DEFAULT_DATA = "/var/lib/hallbox"
DEFAULT_CONFIG = "/etc/hallbox/hall.toml"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get("HALLBOX_DATA") or DEFAULT_DATA)


def cmd_backup(args: argparse.Namespace) -> int:
    from edge.backup import BackupError, backup

    try:
        r = backup(_data_dir(args), Path(args.dest), into_dir=args.dest.endswith("/"))
    except BackupError as e:
        print(f"backup failed: {e}", file=sys.stderr)
        return 1
    print(f"{r.path}: {r.events} events, head seq {r.head_seq}, {r.bytes} bytes, chain verified")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from edge.backup import BackupError, restore

    data = _data_dir(args)
    try:
        r, aside = restore(Path(args.src), data)
    except BackupError as e:
        print(f"restore refused: {e}", file=sys.stderr)
        return 1
    print(f"{data}/hallbox.db restored from {args.src}: {r.events} events, head seq "
          f"{r.head_seq}, chain verified")
    if aside:
        print(f"the database it replaced is kept in {aside}")
    print("events journalled after this copy was made are not in it; the central room may "
          "already hold some of them (see README, Backups)")
    return 0


def cmd_example_config(args: argparse.Namespace) -> int:
    sys.stdout.write(example_file(args.name).read_text(encoding="utf-8"))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge.doctor import print_report, run_doctor

    report = run_doctor(Path(args.config), _data_dir(args), url=args.url,
                        token=args.token or os.environ.get("HALLBOX_TOKEN"))
    print_report(report, as_json=args.json)
    return 0 if report.healthy else 1


def add_ops_parsers(sub: Any) -> None:
    d = sub.add_parser("doctor", help="check this box and say what to fix; exit 1 on problems")
    d.add_argument("--config", default=os.environ.get("HALLBOX_CONFIG", DEFAULT_CONFIG))
    d.add_argument("--data", help=f"data directory (default $HALLBOX_DATA or {DEFAULT_DATA})")
    d.add_argument("--url", help="the running box's API (default: from the config's [api])")
    d.add_argument("--token", help="a manager token to read live device health "
                   "(default $HALLBOX_TOKEN; without it, health comes from the journal)")
    d.add_argument("--json", action="store_true", help="one JSON document for machines")
    d.set_defaults(fn=cmd_doctor)
    b = sub.add_parser("backup", help="online copy of the database to DEST (file or directory)")
    b.add_argument("dest")
    b.add_argument("--data", help=f"data directory (default $HALLBOX_DATA or {DEFAULT_DATA})")
    b.set_defaults(fn=cmd_backup)
    r = sub.add_parser("restore", help="put a verified copy back (the box must be stopped)")
    r.add_argument("src")
    r.add_argument("--data", help=f"data directory (default $HALLBOX_DATA or {DEFAULT_DATA})")
    r.set_defaults(fn=cmd_restore)
    e = sub.add_parser("example-config", help="print the example hall config (or another "
                       "shipped example)")
    e.add_argument("name", nargs="?", default="hall.example.toml",
                   choices=["hall.example.toml", "mqtt.example.toml", "DEMO-CREDENTIALS.md"])
    e.set_defaults(fn=cmd_example_config)
