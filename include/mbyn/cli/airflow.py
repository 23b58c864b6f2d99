"""``mbyn airflow up|down|status|env|password``: the local Airflow of :mod:`mbyn.local.airflow`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mbyn.local import airflow as local
from mbyn.settings import Settings


def _up(settings: Settings, args: argparse.Namespace) -> int:
    state = local.up(settings)
    print(f"{state.url}  ({local.login_hint(settings)}; log {state.log_file})")
    return 0


def _down(settings: Settings, args: argparse.Namespace) -> int:
    if not local.down(settings):
        local.log("no Airflow was running")
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    info = local.status(settings)
    if args.json:
        print(json.dumps(info, indent=2))
    elif info["running"]:
        version = info["version"] or "(API not answering)"
        print(f"airflow: running (pid {info['pid']}), {info['url']}, version {version}")
    else:
        print("airflow: not running")
    return 0 if info["running"] else 3


def _env(settings: Settings, args: argparse.Namespace) -> int:
    print("\n".join(local.env_lines(settings)))
    return 0


def _password(settings: Settings, args: argparse.Namespace) -> int:
    print(f"{args.user} {local.password(settings, args.user)}")
    return 0


def register(sub: Any) -> None:
    """Add the ``airflow`` command group."""
    group = sub.add_parser("airflow", help="the local Airflow (standalone) running mbyn's DAGs")
    actions = group.add_subparsers(dest="action", required=True)
    p = actions.add_parser("up", help="create topics, start `airflow standalone`, wait until its API answers")
    p.set_defaults(handler=_up)
    p = actions.add_parser("down", help="stop it (SIGTERM to its process group, SIGKILL after 30 s)")
    p.set_defaults(handler=_down)
    p = actions.add_parser("status", help="is it running, where, which version (exit 3 when not running)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)
    p = actions.add_parser("env", help='print export lines for the `airflow` CLI: eval "$(mbyn airflow env)"')
    p.set_defaults(handler=_env)
    p = actions.add_parser("password", help="print a login of the local Airflow UI (user and password; a random "
                                             "password is generated at first use, kept 0600 under var/airflow/)")
    p.add_argument("--user", choices=tuple(local.USERS), default=local.ADMIN_USER,
                   help="admin (may trigger DAGs) or viewer (read only); default admin")
    p.set_defaults(handler=_password)
