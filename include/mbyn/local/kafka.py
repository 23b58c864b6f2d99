"""Run a real Apache Kafka 4.x cluster (KRaft, combined broker+controller nodes) from Maven jars.

Layout under ``<var>/kafka/``::

    lib/                    jars resolved from include/kafka-dist/pom.xml (stamped by the POM's hash)
    n1/ or n3/              one folder per cluster size, so 1- and 3-node data never mix
    n1-scram/ or n3-scram/  the same for the secured mode (SASL/SCRAM + ACLs, see mbyn.kafka.security)
    scram-credentials.json  secured mode: one generated password per principal (0600; the local secret store)
        cluster-id          the KRaft cluster id every node was formatted with
        node-K/server.properties, data/, logs/, stdout.log
    cluster.json            pids and bootstrap servers of the running cluster

Nodes always use static ``controller.quorum.voters`` (one code path for 1 and 3 nodes). Every process is
started in its own session so that stopping it never signals the caller, and its output goes to a file.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mbyn.errors import ClusterError, MbynError
from mbyn.files import atomic_write, atomic_write_json
from mbyn.kafka.security import (
    ADMIN,
    apply_acls,
    as_principal,
    broker_properties,
    ensure_users,
    format_arguments,
    local_credentials,
)
from mbyn.local.processes import port_open, progress_printer, stop_process_groups
from mbyn.process import pid_alive
from mbyn.settings import INCLUDE_DIR, Settings

DIST_DIR = INCLUDE_DIR / "kafka-dist"
POM = DIST_DIR / "pom.xml"
LOG4J_CONFIG = DIST_DIR / "log4j2.properties"
TOOLS_LOG4J_CONFIG = DIST_DIR / "tools-log4j2.properties"  # `mbyn kafka tool`: WARN and above to stderr only
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Node:
    node_id: int
    broker_port: int
    controller_port: int
    home: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"


@dataclass
class ClusterState:
    nodes: int
    bootstrap_servers: str
    pids: dict[str, int]  # node id → pid
    security: str = "open"

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self), indent=2)

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        try:
            data = json.loads(path.read_text())
            return cls(nodes=int(data["nodes"]), bootstrap_servers=data["bootstrap_servers"], pids=data["pids"],
                       security=data.get("security", "open"))
        except (OSError, ValueError, KeyError):
            return None


log = progress_printer("kafka")


# Installation ------------------------------------------------------------------------------------------


def lib_dir(settings: Settings) -> Path:
    return settings.kafka_lib_dir or settings.kafka_dir / "lib"


def ensure_jars(settings: Settings) -> Path:
    """Resolve the pinned Kafka jars with Maven unless they are already there for this POM."""
    lib = lib_dir(settings)
    stamp = lib / ".pom-sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ClusterError("Maven (mvn) is not on PATH; install it (Debian: apt-get install maven) or run `make deps`")
    if shutil.which("java") is None:
        raise ClusterError("java is not on PATH; Kafka 4 needs Java 17+ (Debian: openjdk-17-jre-headless)")
    log(f"resolving Apache Kafka jars from Maven Central into {lib} (first run only) ...")
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"Maven could not resolve Kafka (exit {result.returncode}):\n"
                           f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
    (tmp / ".pom-sha256").write_text(digest)
    shutil.rmtree(lib, ignore_errors=True)
    tmp.replace(lib)
    log(f"{len(list(lib.glob('*.jar')))} jars ready")
    return lib


def java_cmd(settings: Settings, main_class: str, *args: str, heap: str | None = None,
             logs_dir: Path | None = None, log_config: Path = LOG4J_CONFIG) -> list[str]:
    """A java command line running ``main_class`` from the Kafka jars (``log_config``: the log4j2 file)."""
    lib = lib_dir(settings)
    cmd = ["java", f"-Xmx{heap or settings.kafka_heap}", "-Xms64m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={log_config}"]
    # Always set: log4j2.properties refers to it, and an unset property becomes a literal folder name.
    cmd.append(f"-Dkafka.logs.dir={logs_dir or settings.logs_dir}")
    cmd += ["-cp", f"{lib}/*", main_class, *args]
    return cmd


# Configuration ---------------------------------------------------------------------------------------


def cluster_home(settings: Settings, nodes: int) -> Path:
    """``n1``/``n3``; the secured mode has its own (``n1-scram``): open and secured data never mix."""
    return settings.kafka_dir / (f"n{nodes}-scram" if settings.security == "scram" else f"n{nodes}")


def plan_nodes(settings: Settings, nodes: int) -> list[Node]:
    home = cluster_home(settings, nodes)
    return [
        Node(node_id=i + 1, broker_port=settings.kafka_port + i, controller_port=settings.kafka_controller_port + i,
             home=home / f"node-{i + 1}")
        for i in range(nodes)
    ]


def server_properties(node: Node, all_nodes: list[Node], admin_password: str | None = None) -> str:
    """The broker+controller configuration of one node; secured (SASL + ACLs) when ``admin_password`` is given."""
    n = len(all_nodes)
    rf = min(3, n)
    min_isr = 2 if n >= 3 else 1
    voters = ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in all_nodes)
    props = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": node.home / "data",
        "num.partitions": 3,
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": 12,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 6,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        "log.retention.check.interval.ms": 60000,
        "log.cleaner.backoff.ms": 5000,
    }
    if admin_password is not None:
        props["listeners"] = (f"SASL_PLAINTEXT://127.0.0.1:{node.broker_port},"
                              f"CONTROLLER://127.0.0.1:{node.controller_port}")
        props["advertised.listeners"] = f"SASL_PLAINTEXT://127.0.0.1:{node.broker_port}"
        props.update(broker_properties(admin_password))
    return "".join(f"{k}={v}\n" for k, v in props.items())


# Lifecycle -------------------------------------------------------------------------------------------


def format_storage(settings: Settings, nodes: list[Node], cluster_size: int,
                   scram: dict[str, str] | None = None) -> None:
    """Format every node's KRaft storage once, all with the same cluster id.

    ``scram`` (principal → password) bootstraps those SCRAM-SHA-512 users into the metadata log, so the
    brokers of a secured cluster can authenticate to each other before any of them is up.
    """
    home = cluster_home(settings, cluster_size)
    id_file = home / "cluster-id"
    if not id_file.exists():
        result = subprocess.run(java_cmd(settings, "kafka.tools.StorageTool", "random-uuid", heap="256m"),
                                capture_output=True, text=True, check=False)
        cluster_id = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else ""
        if not cluster_id:
            raise ClusterError(f"StorageTool random-uuid failed: {result.stderr[-2000:]}")
        home.mkdir(parents=True, exist_ok=True)
        id_file.write_text(cluster_id)
    cluster_id = id_file.read_text().strip()
    for node in nodes:
        if (node.home / "data" / "meta.properties").exists():
            continue
        log(f"formatting KRaft storage of node {node.node_id} (cluster {cluster_id})")
        cmd = java_cmd(settings, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(node.home / "server.properties"), "--ignore-formatted",
                       *format_arguments(scram or {}), heap="256m")
        main = cmd.index("kafka.tools.StorageTool")
        # The class and its arguments (every SCRAM password) go through a 0600 java @argfile in a 0700 folder,
        # never on the command line: any local user reads a process's arguments (`ps`, /proc/<pid>/cmdline).
        with tempfile.TemporaryDirectory(prefix="mbyn-format-") as private:
            argfile = Path(private) / "storage-tool.args"
            atomic_write(argfile, "".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"\n'
                                          for a in cmd[main:]), mode=0o600)
            result = subprocess.run([*cmd[:main], f"@{argfile}"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"formatting node {node.node_id} failed:\n"
                               f"{result.stdout[-2000:]}{result.stderr[-2000:]}")


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL us when the thread that started us dies (test brokers)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()


def start_node(settings: Settings, node: Node, die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start one node in its own session, output to files under its folder.

    ``die_with_parent`` ties the node's life to the calling process (test fixtures: no orphan broker
    even when the test run is killed); the CLI leaves it off so the cluster outlives `mbyn kafka up`.
    """
    logs = node.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = open(node.home / "stdout.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            java_cmd(settings, "kafka.Kafka", str(node.home / "server.properties"), logs_dir=logs),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=not die_with_parent,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    finally:
        out.close()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def running_state(settings: Settings) -> ClusterState | None:
    """The recorded cluster if at least one of its processes is alive."""
    state = ClusterState.load(settings.cluster_file)
    if state and any(pid_alive(pid) for pid in state.pids.values()):
        return state
    return None


def up(settings: Settings, nodes: int | None = None, timeout: float = START_TIMEOUT_S,
       die_with_parent: bool = False) -> ClusterState:
    """Start the cluster (idempotent) and return once every broker port accepts connections."""
    size = nodes or settings.kafka_nodes
    if size not in (1, 3):
        raise ClusterError(f"--nodes must be 1 or 3, got {size}")
    current = running_state(settings)
    if current is not None:
        if current.nodes != size:
            raise ClusterError(f"a {current.nodes}-node cluster is already running; run `mbyn kafka down` first")
        if current.security != settings.security:
            raise ClusterError(f"a cluster in security mode {current.security!r} is already running, not "
                               f"{settings.security!r} (MBYN_SECURITY); run `mbyn kafka down` first")
        wait_ready(settings, plan_nodes(settings, size), {}, timeout)
        log(f"already running: {current.bootstrap_servers}")
        return current
    plan = plan_nodes(settings, size)
    busy = [p for n in plan for p in (n.broker_port, n.controller_port) if port_open(p)]
    if busy:
        raise ClusterError(f"port(s) {busy} are in use by another program; set MBYN_KAFKA_PORT / "
                           "MBYN_KAFKA_CONTROLLER_PORT to free ports")
    ensure_jars(settings)
    scram = None
    if settings.security == "scram":
        scram = local_credentials(settings, create=True)
    for node in plan:
        node.home.mkdir(parents=True, exist_ok=True)
        props = node.home / "server.properties"
        if scram:
            props.touch(mode=0o600)  # a secured node's file holds the admin password
        props.write_text(server_properties(node, plan, scram[ADMIN] if scram else None))
    format_storage(settings, plan, size, scram)
    procs = {}
    for node in plan:
        procs[node.node_id] = start_node(settings, node, die_with_parent)
        log(f"node {node.node_id} started (pid {procs[node.node_id].pid}), logs in {node.home / 'logs'}")
    state = ClusterState(nodes=size, bootstrap_servers=",".join(n.bootstrap for n in plan),
                         pids={str(k): p.pid for k, p in procs.items()}, security=settings.security)
    state.save(settings.cluster_file)
    try:
        wait_ready(settings, plan, procs, timeout)
        if scram is not None:
            secure(settings.model_copy(update={"bootstrap_servers": state.bootstrap_servers}))
    except MbynError:
        down(settings)
        raise
    log(f"ready: bootstrap servers {state.bootstrap_servers}")
    return state


def secure(settings: Settings) -> None:
    """Secured cluster: add SCRAM users created after the format, then the catalog's ACLs (idempotent)."""
    admin = as_principal(settings)
    added = ensure_users(admin, local_credentials(settings))
    if added:
        log(f"SCRAM users added: {', '.join(added)}")
    log(f"{len(apply_acls(admin))} ACLs in place for topic prefix {settings.topic_prefix!r}; "
        f"credentials in {settings.kafka_dir / 'scram-credentials.json'}")


def wait_ready(settings: Settings, plan: list[Node], procs: dict[int, subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait until every broker port is open; fail fast with the log tail if a node exits."""
    deadline = time.monotonic() + timeout
    pending = list(plan)
    while pending:
        for node in list(pending):
            proc = procs.get(node.node_id)
            if proc is not None and proc.poll() is not None:
                raise ClusterError(f"node {node.node_id} exited with code {proc.returncode}; last lines of "
                                   f"{node.home / 'logs' / 'server.log'}:\n{tail(node.home / 'logs' / 'server.log')}"
                                   f"\n{tail(node.home / 'stdout.log')}")
            if port_open(node.broker_port):
                pending.remove(node)
        if pending and time.monotonic() > deadline:
            raise ClusterError(f"broker port(s) {[n.broker_port for n in pending]} not open after {timeout:.0f}s; "
                               f"see {pending[0].home / 'logs' / 'server.log'}")
        if pending:
            time.sleep(0.25)


def down(settings: Settings, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the recorded cluster; returns False if nothing was running."""
    state = ClusterState.load(settings.cluster_file)
    if state is None:
        return False
    pids = list(state.pids.values())
    alive = [p for p in pids if pid_alive(p)]
    if alive:
        log(f"stopping {len(alive)} node(s) ...")
        stop_process_groups(alive, timeout, who="kafka node")
    settings.cluster_file.unlink(missing_ok=True)
    log("stopped")
    return bool(alive)


def status(settings: Settings) -> dict[str, object]:
    """Per node: pid, alive, broker port open."""
    state = ClusterState.load(settings.cluster_file)
    if state is None:
        return {"running": False, "nodes": []}
    plan = plan_nodes(settings.model_copy(update={"security": state.security}), state.nodes)
    rows = []
    for node in plan:
        pid = state.pids.get(str(node.node_id))
        rows.append({"node_id": node.node_id, "pid": pid, "alive": bool(pid and pid_alive(pid)),
                     "broker_port": node.broker_port, "ready": port_open(node.broker_port)})
    return {"running": any(r["alive"] for r in rows), "bootstrap_servers": state.bootstrap_servers,
            "security": state.security, "nodes": rows}


def kill_node(settings: Settings, node_id: int, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to one node (fault tests). Returns its pid."""
    state = ClusterState.load(settings.cluster_file)
    if state is None or str(node_id) not in state.pids:
        raise ClusterError(f"no running node {node_id}")
    pid = state.pids[str(node_id)]
    os.killpg(pid, sig)
    return pid


def restart_node(settings: Settings, node_id: int, timeout: float = START_TIMEOUT_S,
                 die_with_parent: bool = False) -> int:
    """Start a stopped node of the running cluster again and wait for its broker port.

    ``die_with_parent`` as for ``up``: a test restarting a node of its cluster keeps it tied to the test.
    """
    state = ClusterState.load(settings.cluster_file)
    if state is None:
        raise ClusterError("no cluster recorded")
    plan = plan_nodes(settings.model_copy(update={"security": state.security}), state.nodes)
    node = next(n for n in plan if n.node_id == node_id)
    proc = start_node(settings, node, die_with_parent)
    state.pids[str(node_id)] = proc.pid
    state.save(settings.cluster_file)
    wait_ready(settings, [node], {node_id: proc}, timeout)
    return proc.pid


def build(settings: Settings) -> str:
    """``mbyn build`` step: resolve the Kafka jars."""
    lib = ensure_jars(settings)
    return f"{len(list(lib.glob('*.jar')))} jars in {lib}"
