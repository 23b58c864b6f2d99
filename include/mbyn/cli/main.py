"""The ``mbyn`` command line: one entry point for the cluster, topics, producers, consumers and reports.

Every sub-command validates settings first, prints human-readable progress on stderr, and exits with
status 2 on a configuration error and 1 on any other mbyn error — with one line saying what to fix.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from mbyn.errors import ConfigError, MbynError
from mbyn.settings import Settings, get_settings

Handler = Callable[[Settings, argparse.Namespace], int]


def _kafka_up(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.local import kafka as cluster

    if args.security:
        settings = settings.model_copy(update={"security": args.security})
    state = cluster.up(settings, nodes=args.nodes)
    print(state.bootstrap_servers)
    return 0


def _kafka_credentials(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.kafka.security import principal_environment

    for name, value in principal_environment(settings, args.principal).items():
        print(f"export {name}={value}")
    return 0


def _kafka_down(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.local import kafka as cluster

    if not cluster.down(settings):
        print("no cluster was running", file=sys.stderr)
    return 0


def _kafka_status(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.local import kafka as cluster

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


def _topics_apply(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.kafka.admin import apply_topics
    from mbyn.kafka.security import acl_plan, as_principal

    settings = as_principal(settings)  # secured local cluster: admin from the local store unless the env names one
    for change in apply_topics(settings, names=args.topic or None):
        print(f"{change.topic:<28} {change.action:<18} {change.detail}")
    if settings.security == "scram":
        print(f"{len(acl_plan(prefix=settings.topic_prefix))} ACLs in place for prefix {settings.topic_prefix!r}")
    return 0


def _topics_list(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.catalog import load_catalog

    for topic in load_catalog().topics.values():
        policy = topic.config.get("cleanup.policy", "delete")
        print(f"{topic.physical:<28} partitions={topic.partitions:<3} {policy:<8} key={topic.key}  {topic.description}")
    return 0


def _build(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.local.build import build_all

    build_all(settings, only=args.only or None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    _load_extensions()
    parser = argparse.ArgumentParser(prog="mbyn", description="mbyn — an M×N Kafka pipeline on one laptop.")
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="the local Apache Kafka cluster").add_subparsers(dest="action", required=True)
    p = kafka.add_parser("up", help="start the cluster (formats storage on first run) and wait until ready")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=None,
                   help="1 or 3 combined KRaft nodes (default: MBYN_KAFKA_NODES or 1)")
    p.add_argument("--security", choices=("open", "scram"), default=None,
                   help="open (default) or scram: SASL/SCRAM users and ACLs, one principal per service "
                        "(passwords generated once into var/kafka/scram-credentials.json); default MBYN_SECURITY")
    p.set_defaults(handler=_kafka_up)
    p = kafka.add_parser("credentials", help="print `export MBYN_...` lines authenticating as one principal "
                                             "of the secured local cluster (eval them in a shell)")
    p.add_argument("principal", help="admin or a service name (see docs/RELIABILITY.md \"Secured mode\")")
    p.set_defaults(handler=_kafka_credentials)
    p = kafka.add_parser("down", help="stop the cluster (SIGTERM, then SIGKILL after 30 s)")
    p.set_defaults(handler=_kafka_down)
    p = kafka.add_parser("status", help="show node processes and ports (exit 3 when not running)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_kafka_status)

    topics = sub.add_parser("topics", help="the topic catalog").add_subparsers(dest="action", required=True)
    p = topics.add_parser("apply", help="create missing catalog topics, raise partition counts")
    p.add_argument("topic", nargs="*", help="only these catalog topics")
    p.set_defaults(handler=_topics_apply)
    p = topics.add_parser("list", help="print the catalog")
    p.set_defaults(handler=_topics_list)

    p = sub.add_parser("build", help="resolve Kafka jars, build the Java and Go producers (idempotent)")
    p.add_argument("only", nargs="*", help="only these build steps")
    p.set_defaults(handler=_build)

    for register in _EXTENSIONS:
        register(sub)
    return parser


#: Sub-command groups defined beside their code (producers, consumers, reports ...) add themselves here.
_EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []  # type: ignore[type-arg]


def _load_extensions() -> None:
    from mbyn.cli import commands

    _EXTENSIONS[:] = commands.REGISTRARS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        return int(args.handler(settings, args))
    except ConfigError as exc:
        print(f"mbyn: configuration error: {exc}", file=sys.stderr)
        return 2
    except MbynError as exc:
        print(f"mbyn: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mbyn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
