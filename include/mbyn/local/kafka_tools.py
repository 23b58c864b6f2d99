"""``mbyn kafka tool NAME [args...]``: Kafka's own command-line tools from the project's jars on the local cluster.

The tools are the ones the ``kafka-*.sh`` scripts of a Kafka release start (``kafka-console-consumer.sh`` is
``mbyn kafka tool console-consumer``), run with ``java -cp var/kafka/lib/*`` like the brokers (no Kafka
installation needed). What mbyn adds to the arguments, each only when the user did not give it:

* ``--bootstrap-server`` with the local cluster's bootstrap servers (not when ``--bootstrap-server`` or
  ``--bootstrap-controller`` is given).
* Secured mode (``MBYN_SECURITY=scram``, or a running local cluster started secured — but when the user
  gives their own ``--bootstrap-server`` / ``--bootstrap-controller``, only an explicit ``MBYN_SECURITY=scram``:
  they may target another cluster): a client config file ``client-<principal>.properties`` (SASL_PLAINTEXT,
  SCRAM-SHA-512 and the principal's password) in a private temporary folder (0700, the file 0600) that
  ``run_tool`` deletes when the tool exits (also on Ctrl-C), passed with the option the tool expects
  (``--producer.config``, ``--consumer.config`` or ``--command-config``). The principal is ``--principal``
  if given (password from the local secret store), else the one the environment names
  (``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD``), else ``admin`` for a tool or action that changes the
  cluster (console-producer, acls, delete-records, or an argument such as ``--create`` / ``--alter`` /
  ``--reset-offsets``), and the read-only ``viewer`` for the rest (``admin`` where the local store has no
  viewer).
* Secured console-consumer without ``--group``: a throwaway group ``<prefix><principal>-console-<hex>``
  with auto-commit off. Only ``viewer`` (READ on the groups ``<prefix>viewer-*``) and ``admin`` (a super
  user) may join such groups: any other principal (``--principal <service>``) is only allowed its own
  consumer groups, so give it a ``--group`` of its own (one the ACLs grant it, see docs/RELIABILITY.md).

Java clients authenticate with SCRAM against Kafka 4.x on every machine, which librdkafka before 2.6.1
(e.g. Debian 12's kcat) does not: this is the external client that works in both modes.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mbyn.errors import ConfigError
from mbyn.files import atomic_write
from mbyn.kafka.clients import MECHANISM, client_config
from mbyn.kafka.security import ADMIN, VIEWER, local_credentials, principal_environment
from mbyn.local import kafka as cluster
from mbyn.settings import Settings

TOOL_HEAP = "256m"


@dataclass(frozen=True)
class Tool:
    """One Kafka command-line tool: its main class, the option taking a client config file, whether it writes."""

    main_class: str
    config_option: str = "--command-config"
    writes: bool = False


#: NAME → tool (the names of the ``kafka-NAME.sh`` scripts; classes checked against Kafka 4.1's jars).
TOOLS: dict[str, Tool] = {
    "console-producer": Tool("org.apache.kafka.tools.ConsoleProducer", "--producer.config", writes=True),
    "console-consumer": Tool("org.apache.kafka.tools.consumer.ConsoleConsumer", "--consumer.config"),
    "consumer-groups": Tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
    "topics": Tool("org.apache.kafka.tools.TopicCommand"),
    "get-offsets": Tool("org.apache.kafka.tools.GetOffsetShell"),
    "configs": Tool("kafka.admin.ConfigCommand"),
    "acls": Tool("org.apache.kafka.tools.AclCommand", writes=True),
    "log-dirs": Tool("org.apache.kafka.tools.LogDirsCommand"),
    "delete-records": Tool("org.apache.kafka.tools.DeleteRecordsCommand", writes=True),
    "transactions": Tool("org.apache.kafka.tools.TransactionsCommand"),
    "metadata-quorum": Tool("org.apache.kafka.tools.MetadataQuorumCommand"),
    "broker-api-versions": Tool("org.apache.kafka.tools.BrokerApiVersionsCommand"),
}

#: Arguments that make an otherwise reading tool change the cluster: such a call runs as admin by default.
WRITE_ARGUMENTS = frozenset({"--create", "--delete", "--alter", "--add", "--remove", "--reset-offsets",
                             "--delete-offsets", "--execute", "--add-config", "--delete-config", "abort"})


def tool_names() -> str:
    return ", ".join(TOOLS)


def _given(args: Sequence[str], *options: str) -> bool:
    """Whether ``args`` set any of ``options`` (``--opt value`` or ``--opt=value``)."""
    return any(a == o or a.startswith(o + "=") for a in args for o in options)


def effective_settings(settings: Settings) -> Settings:
    """``settings``, in the running local cluster's security mode unless ``MBYN_SECURITY`` was set explicitly."""
    running = cluster.running_state(settings)
    if running is not None and "security" not in settings.model_fields_set and running.security != settings.security:
        return settings.model_copy(update={"security": running.security})
    return settings


def default_principal(name: str, args: Sequence[str], known: Sequence[str]) -> str:
    """admin for a tool or arguments that change the cluster, else the viewer (admin where it is not ``known``:
    ``known`` are the principals of the credential store, not every principal mbyn defines)."""
    if TOOLS[name].writes or any(a.split("=", 1)[0] in WRITE_ARGUMENTS for a in args):
        return ADMIN
    return VIEWER if VIEWER in known else ADMIN


def client_properties(username: str, password: str) -> str:
    """The Java client configuration of a SCRAM principal (a ``.properties`` file).

    ConfigError unless the user name and password are printable ASCII without ``"`` and ``\\``: Java reads
    a ``.properties`` file as ISO-8859-1 and breaks lines at ``\\r`` and ``\\n``, and the JAAS line quotes
    the values — anything else could change or inject configuration.
    """
    for what, value in (("user name", username), ("password", password)):
        if any(not " " <= c <= "~" or c in '"\\' for c in value):  # the characters themselves are not shown
            raise ConfigError(f"the {what} of SCRAM user {username!r} contains a character a Java client config "
                              "cannot carry: only printable ASCII without '\"' and '\\\\' (no control, line "
                              "break or non-ASCII character: Java reads .properties files as ISO-8859-1)")
    return ("security.protocol=SASL_PLAINTEXT\n"
            f"sasl.mechanism={MECHANISM}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{username}" password="{password}";\n')


def write_client_config(directory: Path, username: str, password: str) -> Path:
    """``directory/client-<principal>.properties`` (mode 0600) — ``directory`` a private one (``run_tool``'s
    temporary folder): the file holds the password."""
    path = directory / f"client-{username}.properties"
    atomic_write(path, client_properties(username, password).encode(), mode=0o600)
    return path


def credentials(settings: Settings, name: str, args: Sequence[str], principal: str | None) -> tuple[str, str]:
    """(user, password) the secured tool authenticates with: ``principal`` from the local store, else the
    environment's ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD`` (ConfigError naming both when one is
    missing), else ``default_principal`` from the local store."""
    if principal is not None:
        return principal, principal_environment(settings, principal)["MBYN_KAFKA_PASSWORD"]
    if settings.kafka_username or settings.kafka_password is not None:
        config = client_config(settings)
        return config["sasl.username"], config["sasl.password"]
    store = local_credentials(settings)
    chosen = default_principal(name, args, list(store))
    return chosen, principal_environment(settings, chosen)["MBYN_KAFKA_PASSWORD"]


def tool_command(settings: Settings, name: str, args: Sequence[str], principal: str | None = None,
                 config_dir: Path | None = None) -> list[str]:
    """The java command line of tool ``name`` with ``args``; ConfigError naming the tools when ``name`` is unknown.

    Secured: the client config file is written into ``config_dir`` (a private folder the caller deletes;
    ValueError without one).
    """
    if name not in TOOLS:
        raise ConfigError(f"unknown Kafka tool {name!r}; known: {tool_names()}")
    tool = TOOLS[name]
    extra: list[str] = []
    if _given(args, "--bootstrap-server", "--bootstrap-controller"):
        # their own cluster, maybe not the local one: its security config only when MBYN_SECURITY says so
        secured = settings.security == "scram" and "security" in settings.model_fields_set
    else:
        settings = effective_settings(settings)
        secured = settings.security == "scram"
        extra += ["--bootstrap-server", settings.bootstrap()]
    if secured and not _given(args, tool.config_option):
        if config_dir is None:
            raise ValueError("tool_command: the secured mode needs a private config_dir for the client config")
        username, password = credentials(settings, name, args, principal)
        extra += [tool.config_option, str(write_client_config(config_dir, username, password))]
        if name == "console-consumer" and not _given(args, "--group") and "group.id=" not in " ".join(args):
            extra += ["--group", f"{settings.topic_prefix}{username}-console-{secrets.token_hex(4)}",
                      "--consumer-property", "enable.auto.commit=false"]
    # Global options first: the argparse4j tools (transactions, metadata-quorum) take them before the sub-command.
    return cluster.java_cmd(settings, tool.main_class, *extra, *args, heap=TOOL_HEAP,
                            log_config=cluster.TOOLS_LOG4J_CONFIG)


def run_tool(settings: Settings, name: str, args: Sequence[str], principal: str | None = None) -> int:
    """Run the tool in the foreground (stdin/stdout/stderr are the caller's); its exit status.

    Ctrl-C reaches the tool too (same process group): it stops on its own (the console consumer prints how
    many records it processed), and this waits for it instead of leaving it behind.
    The secured mode's client config lives in a private temporary folder (0700) deleted when the tool exits,
    on Ctrl-C and on errors: no password outlives the call.
    """
    with tempfile.TemporaryDirectory(prefix="mbyn-kafka-tool-") as private:  # mkdtemp: mode 0700
        cmd = tool_command(settings, name, args, principal, config_dir=Path(private))
        cluster.ensure_jars(settings)
        proc = subprocess.Popen(cmd)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            sys.stdout.flush()
