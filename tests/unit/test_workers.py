"""The worker registry (``mbyn.workers``): the only list of workers, true to the catalog and to the code, and
the one place a new worker has to be declared."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from mbyn.catalog import load_catalog
from mbyn.cli.main import build_parser
from mbyn.consumers.contract import StreamConsumer
from mbyn.kafka.security import ADMIN, BROWSERS, OTHER_GROUPS, acl_plan, groups_of, principals
from mbyn.local.supervisor import Supervisor, parse_scale
from mbyn.pipeline_view.data import KnownProducer, known_producers
from mbyn.settings import PROJECT_ROOT, load_settings
from mbyn.status import consumer_topics
from mbyn.warehouse.schema import metadata
from mbyn.workers import WORKERS, Worker, consumers, producers

PACKAGE = PROJECT_ROOT / "include" / "mbyn"
REGISTRY = PACKAGE / "workers.py"


# The registry agrees with the catalog and the code ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_reads_and_writes_are_the_catalogs_readers_and_writers(name: str) -> None:
    worker = WORKERS[name]
    topics = load_catalog().topics.values()
    assert set(worker.reads) == {t.name for t in topics if name in t.readers}, \
        f"{name}: `reads` in mbyn/workers.py and the topics naming it in `readers` (include/topics.yaml) differ"
    assert set(worker.writes) == {t.name for t in topics if name in t.writers}, \
        f"{name}: `writes` in mbyn/workers.py and the topics naming it in `writers` (include/topics.yaml) differ"
    assert len(set(worker.reads)) == len(worker.reads) and len(set(worker.writes)) == len(worker.writes)
    assert set(worker.tables) <= set(worker.reads), f"{name}: a table topic it does not read"
    assert bool(worker.groups) == bool(worker.reads), f"{name}: a reader needs a consumer group, only a reader"
    assert worker.copies >= 0
    assert not (worker.kind == "producer" and (worker.transactional or worker.monitor or worker.instance_id))


def test_every_catalog_principal_is_a_worker_or_a_declared_other_service() -> None:
    others = {ADMIN, *BROWSERS, *OTHER_GROUPS}
    named = {n for t in load_catalog().topics.values() for n in (*t.readers, *t.writers)}
    assert named - set(WORKERS) - others == set(), "catalog readers/writers that are neither workers nor declared " \
                                                   "in mbyn.kafka.security"
    assert not set(WORKERS) & others
    assert set(principals()) == {ADMIN, *BROWSERS, *WORKERS, *(named - set(WORKERS))}


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_every_worker_module_exists_and_matches_its_declaration(name: str) -> None:
    worker = WORKERS[name]
    module = importlib.import_module(worker.module)
    assert callable(getattr(module, "run", None)), f"{worker.module} has no run(settings, args)"
    flags = {flag for option in getattr(module, "OPTIONS", ()) for flag in option.flags}
    assert worker.instance_id == ("--instance-id" in flags), \
        f"{name}: `instance_id` must say whether `mbyn {worker.verb} {name}` accepts --instance-id"
    if worker.kind == "producer":
        assert getattr(module, "SOURCE", None) == worker.source, f"{name}: `source` differs from {worker.module}.SOURCE"
        return
    apps = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == worker.module and getattr(cls, "name", None) == name and hasattr(cls, "topics")]
    if not worker.reads:  # the lag monitor polls the admin API, no records
        assert not apps
        return
    assert len(apps) == 1, f"{worker.module}: no consumer class named {name!r}"
    assert tuple(apps[0].topics) == worker.subscribes, f"{name}: subscribes to {apps[0].topics}"
    assert (getattr(apps[0], "commit_mode", None) == "transaction") == worker.transactional


@pytest.mark.parametrize("name", sorted(w.name for w in consumers()))
def test_a_consumers_groups_and_replay_policy_are_what_its_code_does(name: str) -> None:
    """The ACLs grant ``groups``; the runtime joins the group named after the consumer — they must agree. Replay
    runs ``replay_class`` in-process: a StreamConsumer of that name in the module; ``adds_to`` is a real table."""
    worker = WORKERS[name]
    assert worker.groups == ((name,) if worker.subscribes else ()), \
        f"{name}: the runtime's group id is the consumer's name; `groups` in mbyn/workers.py says {worker.groups}"
    if worker.replay_class:
        cls = getattr(importlib.import_module(worker.module), worker.replay_class)
        assert issubclass(cls, StreamConsumer) and cls.name == name
    assert not worker.adds_to or worker.adds_to in metadata.tables
    assert not (worker.replay_class and worker.adds_to), f"{name}: an additive sink cannot be replayed in-process"


def test_importing_the_registry_imports_no_worker_module() -> None:
    code = "import sys, mbyn.workers; print(' '.join(sorted(m for m in sys.modules if m.startswith('mbyn'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(loaded) == {"mbyn", "mbyn.workers", "mbyn.errors"}, loaded


def test_names_are_unique_and_keys_say_the_cli_command() -> None:
    assert [w.name for w in producers()] + [w.name for w in consumers()] == list(WORKERS)
    assert WORKERS["clickstream"].key == "produce:clickstream"
    assert WORKERS["lag-monitor"].key == "consume:lag-monitor"
    assert WORKERS["order-enricher"].subscribes == ("orders",)  # fx-rates is read in full as a table
    assert groups_of("payments") == ("payments-service",) and groups_of("warehouse-loader") == ("warehouse-loader",)


# No other list of workers --------------------------------------------------------------------------------

#: Module-level names of the old scattered worker lists (the security plan's GROUPS went too, but the CLI's
#: command groups rightly have that name).
LIST_NAMES = {"PRODUCERS", "CONSUMERS", "WORKERS", "DEFAULT_SCALE", "DEFAULT_ARGS", "MONITORS", "TRANSACTIONAL"}


def worker_tokens() -> set[str]:
    """Strings that only a list of workers holds: names that are not also topic names (``clickstream`` is
    both), ``produce:NAME`` / ``consume:NAME`` keys and module paths."""
    topics = set(load_catalog().topics)
    return ({w.name for w in WORKERS.values()} - topics) | {w.key for w in WORKERS.values()} \
        | {w.module for w in WORKERS.values()}


def worker_lists(source: str, tokens: set[str]) -> list[str]:
    """Where ``source`` declares workers: a literal or call holding 3+ worker tokens, or a module-level name
    or class of the old registries."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict | ast.Call):
            held = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in tokens}
            if len(held) >= 3:
                found.append(f"line {node.lineno}: {sorted(held)}")
    for stmt in tree.body:
        targets = (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                   if isinstance(stmt, ast.AnnAssign) else [])
        found += [f"line {stmt.lineno}: {t.id} =" for t in targets if isinstance(t, ast.Name) and t.id in LIST_NAMES]
        if isinstance(stmt, ast.ClassDef) and stmt.name in ("Worker", "WorkerSpec"):
            found.append(f"line {stmt.lineno}: class {stmt.name}")
    return found


def test_no_module_but_the_registry_lists_workers() -> None:
    tokens = worker_tokens()
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != REGISTRY:
            found = worker_lists(path.read_text(encoding="utf-8"), tokens)
            if found:
                offenders[str(path.relative_to(PROJECT_ROOT))] = found
    assert not offenders, f"workers are declared in mbyn/workers.py only; also found in: {offenders}"


@pytest.mark.parametrize("source, flagged", [
    ('DEFAULT_SCALE = {"produce:clickstream": 2, "consume:lag-monitor": 1}', True),
    ('X = {"produce:clickstream": 2, "consume:lag-monitor": 1, "consume:dead-letters": 1}', True),
    ('SPECS = (Spec("warehouse-loader", "mbyn.consumers.warehouse_loader"), Spec("lag-monitor", "x"))', True),
    ('def f():\n    return ["order-enricher", "fraud-detector", "lake-archiver"]', True),
    ('class WorkerSpec:\n    pass', True),
    ('TOPICS = ("clickstream", "orders", "payments", "customers", "inventory", "fx-rates", "shipments")', False),
    ('NAME = "warehouse-loader"\nOTHER = ("dead-letters", "lag-monitor")', False),
])
def test_the_scan_finds_worker_lists_and_leaves_topic_lists_alone(source: str, flagged: bool) -> None:
    assert bool(worker_lists(source, worker_tokens())) == flagged


# One entry is all it takes -----------------------------------------------------------------------------

FAKE_MODULE = '''
from mbyn.options import CONSUMER_OPTIONS, CONSUME_LIMITS
OPTIONS = CONSUMER_OPTIONS
RAN = []

def run(settings, args):
    RAN.append(args)
    return 0
'''


def test_a_new_registry_entry_is_all_it_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A consumer and a producer declared only in ``WORKERS`` (module written to a temporary folder): the CLI
    runs them, ``mbyn run`` starts them, status and the view know them, the secured mode plans their rights."""
    (tmp_path / "mbyn_fake_worker.py").write_text(FAKE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sink = Worker("fake-sink", "consumer", "mbyn_fake_worker", "test consumer", reads=("orders", "fx-rates"),
                  tables=("fx-rates",), writes=("dead-letters",), copies=2, instance_id=True, transactional=True)
    source = Worker("fake-source", "producer", "mbyn_fake_worker", "test producer", writes=("orders",),
                    source="fake-src", copies=1, args=("--rate", "3"))
    monkeypatch.setitem(WORKERS, sink.name, sink)
    monkeypatch.setitem(WORKERS, source.name, source)

    scale = parse_scale([])
    assert scale["consume:fake-sink"] == 2 and scale["produce:fake-source"] == 1
    settings = load_settings(var_dir=tmp_path / "var")
    supervisor = Supervisor(settings, {k: v for k, v in scale.items() if "fake" in k})
    argvs = sorted(c.argv[3:] for c in supervisor.copies)
    assert argvs == [["consume", "fake-sink", "--instance-id", "fake-sink-0"],
                     ["consume", "fake-sink", "--instance-id", "fake-sink-1"],
                     ["produce", "fake-source", "--rate", "3"]]
    args = build_parser().parse_args(argvs[0])  # what the copy runs: `mbyn consume fake-sink --instance-id ...`
    assert args.handler(settings, args) == 0
    fake = importlib.import_module("mbyn_fake_worker")
    assert fake.RAN[-1].instance_id == "fake-sink-0"

    assert consumer_topics()["fake-sink"] == ("orders",)
    assert KnownProducer("fake-source", "fake-src", "orders", "test producer") in known_producers()

    catalog = load_catalog()  # its topics in the catalog are the other half of adding a worker
    topics = {name: dataclasses.replace(t, readers=(*t.readers, "fake-sink")) if name in sink.reads else t
              for name, t in catalog.topics.items()}
    plan = {(r.principal, r.operation, r.resource, r.name)
            for r in acl_plan(dataclasses.replace(catalog, topics=topics), prefix="p-")}
    assert {("fake-sink", "read", "topic", "p-orders"), ("fake-sink", "read", "group", "p-fake-sink"),
            ("fake-sink", "write", "transactional_id", "p-fake-sink-")} <= plan
    assert {"fake-sink", "fake-source"} <= set(principals())
