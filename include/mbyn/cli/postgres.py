"""``mbyn postgres up|down|status|url``: the project-started PostgreSQL of :mod:`mbyn.local.postgres`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mbyn.local import postgres
from mbyn.settings import Settings, hide_password


def _up(settings: Settings, args: argparse.Namespace) -> int:
    print(f"{hide_password(postgres.up(settings))}   (full URL: mbyn postgres url)")
    return 0


def _down(settings: Settings, args: argparse.Namespace) -> int:
    if not postgres.down(settings):
        print("postgres: not running", file=sys.stderr)
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    info = postgres.status(settings)
    if args.json:
        print(json.dumps(info, indent=2))
    elif info["running"]:
        print(f"postgres: running (pid {info['pid']}) on 127.0.0.1:{info['port']}, data in {info['data_dir']}")
    else:
        print(f"postgres: not running ({'initialised' if info['initialised'] else 'not initialised'}, "
              f"data in {info['data_dir']})")
    return 0 if info["running"] else 3


def _url(settings: Settings, args: argparse.Namespace) -> int:
    print(postgres.LocalPostgres.from_settings(settings).url(args.database, args.role))
    return 0


def register(sub: Any) -> None:
    """Add the ``postgres`` command group."""
    group = sub.add_parser("postgres", help="the project-started PostgreSQL (warehouse for tests and "
                                            "--warehouse postgres)")
    actions = group.add_subparsers(dest="action", required=True)
    p = actions.add_parser("up", help="start it (initdb on first use), create database mbyn, print its URL "
                                            "(password masked: `mbyn postgres url` prints it)")
    p.set_defaults(handler=_up)
    p = actions.add_parser("down", help="stop it (pg_ctl stop -m fast)")
    p.set_defaults(handler=_down)
    p = actions.add_parser("status", help="show pid, port and data folder (exit 3 when not running)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)
    p = actions.add_parser("url", help="print the SQLAlchemy URL with its password "
                                            "(whether running or not)")
    p.add_argument("--database", default=postgres.DATABASE,
                   help=f"database name in the URL (default {postgres.DATABASE})")
    p.add_argument("--role", choices=postgres.ROLES, default=postgres.LOADER,
                   help=f"{postgres.LOADER} (writes the warehouse; default), {postgres.READER} (SELECT only) or "
                        f"{postgres.SUPERUSER} (the superuser: setup only)")
    p.set_defaults(handler=_url)
