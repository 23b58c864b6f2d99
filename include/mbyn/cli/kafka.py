"""``mbyn kafka up|down|status|credentials|tool``: the local Apache Kafka cluster of :mod:`mbyn.local.kafka`
and Kafka's own command-line tools against it (:mod:`mbyn.local.kafka_tools`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mbyn.kafka.security import principal_environment
from mbyn.local import kafka as cluster
from mbyn.local import kafka_tools
from mbyn.settings import Settings


def _up(settings: Settings, args: argparse.Namespace) -> int:
    if args.security:
        settings = settings.model_copy(update={"security": args.security})
    state = cluster.up(settings, nodes=args.nodes)
    print(state.bootstrap_servers)
    return 0


def _credentials(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in principal_environment(settings, args.principal).items():
        print(f"export {name}={value}")
    return 0


def _down(settings: Settings, args: argparse.Namespace) -> int:
    if not cluster.down(settings):
        print("no cluster was running", file=sys.stderr)
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    info = cluster.status(settings)
    if args.json:
        print(json.dumps(info, indent=2))
    elif not info["running"]:
        print("kafka: not running")
    else:
        print(f"kafka: running, bootstrap servers {info['bootstrap_servers']}")
        for node in info["nodes"]:  # type: ignore[attr-defined]
            state = "ready" if node["ready"] else ("starting" if node["alive"] else "down")
            print(f"  node {node['node_id']}: pid {node['pid']} port {node['broker_port']} {state}")
    return 0 if info["running"] else 3


def _tool(settings: Settings, args: argparse.Namespace) -> int:
    if args.name not in kafka_tools.TOOLS:
        print(f"mbyn kafka tool: unknown tool {args.name!r}; known: {kafka_tools.tool_names()}", file=sys.stderr)
        return 2
    return kafka_tools.run_tool(settings, args.name, args.args, args.tool_principal)


def register(sub: Any) -> None:
    """Add the ``kafka`` command group."""
    kafka = sub.add_parser("kafka", help="the local Apache Kafka cluster").add_subparsers(dest="action", required=True)
    p = kafka.add_parser("up", help="start the cluster (formats storage on first run) and wait until ready")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=None,
                   help="1 or 3 combined KRaft nodes (default: MBYN_KAFKA_NODES or 1)")
    p.add_argument("--security", choices=("open", "scram"), default=None,
                   help="open (default) or scram: SASL/SCRAM users and ACLs, one principal per service "
                        "(passwords generated once into var/kafka/scram-credentials.json); default MBYN_SECURITY")
    p.set_defaults(handler=_up)
    p = kafka.add_parser("credentials", help="print `export MBYN_...` lines authenticating as one principal "
                                             "of the secured local cluster (eval them in a shell)")
    p.add_argument("principal", help="admin or a service name (see docs/RELIABILITY.md \"Secured mode\")")
    p.set_defaults(handler=_credentials)
    p = kafka.add_parser(
        "tool", help="run one of Kafka's own command-line tools against the local cluster (both security modes)",
        description="Runs Kafka's command-line tool NAME (kafka-NAME.sh of a Kafka release) from the project's "
                    "jars with ARGS; adds --bootstrap-server and, in the secured mode, a client config file of "
                    "the principal (in a private temporary folder, 0600, deleted when the tool exits). With your "
                    "own --bootstrap-server or --bootstrap-controller (maybe another cluster), nothing is added "
                    "and the security config only when MBYN_SECURITY=scram is set explicitly. "
                    f"Tools: {kafka_tools.tool_names()}. "
                    "Example: mbyn kafka tool console-consumer --topic orders --from-beginning --max-messages 5",
        epilog="Options of mbyn kafka tool itself come before NAME; everything after NAME goes to the tool.")
    p.add_argument("--principal", dest="tool_principal", default=None,
                   help="secured mode: authenticate as this principal (default: viewer for reading, admin for "
                        "console-producer, acls, delete-records and --create/--alter/--delete/--reset-offsets...; "
                        "admin where the local store has no viewer; MBYN_KAFKA_USERNAME/MBYN_KAFKA_PASSWORD when set). "
                        "A secured console-consumer without --group gets a throwaway group only viewer and admin "
                        "may join: with another principal, give a --group of its own")
    p.add_argument("name", metavar="NAME", help=f"the tool: {kafka_tools.tool_names()}")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the tool's own arguments (see NAME --help)")
    # reads_pipeline: next to a running `mbyn run`, its bootstrap servers, security mode and prefix apply
    p.set_defaults(handler=_tool, reads_pipeline=True)
    p = kafka.add_parser("down", help="stop the cluster (SIGTERM, then SIGKILL after 30 s)")
    p.set_defaults(handler=_down)
    p = kafka.add_parser("status", help="show node processes and ports (exit 3 when not running)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)
