"""``mbyn topics apply|list``: the topic catalog (``include/topics.yaml``) and the broker's topics."""

from __future__ import annotations

import argparse
from typing import Any

from mbyn.catalog import load_catalog
from mbyn.kafka.admin import apply_topics
from mbyn.kafka.security import ADMIN, acl_plan, as_principal, ensure_local_users
from mbyn.settings import Settings


def _apply(settings: Settings, args: argparse.Namespace) -> int:
    settings = as_principal(settings)  # secured local cluster: admin from the local store unless the env names one
    added = ensure_local_users(settings)  # principals newer than the cluster (e.g. viewer): before their ACLs
    if added:
        print(f"SCRAM users added: {', '.join(added)}")
    for change in apply_topics(settings, names=args.topic or None):
        print(f"{change.topic:<28} {change.action:<18} {change.detail}")
    if settings.security == "scram":
        print(f"{len(acl_plan(prefix=settings.topic_prefix))} ACLs in place for prefix {settings.topic_prefix!r}")
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    for topic in load_catalog().topics.values():
        policy = topic.config.get("cleanup.policy", "delete")
        print(f"{topic.physical:<28} partitions={topic.partitions:<3} {policy:<8} key={topic.key}  {topic.description}")
    return 0


def register(sub: Any) -> None:
    """Add the ``topics`` command group."""
    topics = sub.add_parser("topics", help="the topic catalog").add_subparsers(dest="action", required=True)
    p = topics.add_parser("apply", help="create missing catalog topics, raise partition counts")
    p.add_argument("topic", nargs="*", help="only these catalog topics")
    p.set_defaults(handler=_apply, reads_pipeline=True, principal=ADMIN)
    p = topics.add_parser("list", help="print the catalog")
    p.set_defaults(handler=_list)
