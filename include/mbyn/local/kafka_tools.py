"""``mbyn kafka tool NAME [args...]``: Kafka's own command-line tools from the project's jars on the local cluster.

The tools are the ones the ``kafka-*.sh`` scripts of a Kafka release start (``kafka-console-consumer.sh`` is
``mbyn kafka tool console-consumer``), run with ``java -cp var/kafka/lib/*`` like the brokers (no Kafka
installation needed). What mbyn adds to the arguments, each only when the user did not give it:

* ``--bootstrap-server`` with the local cluster's bootstrap servers (not when ``--bootstrap-controller``
  is given).
* Secured mode (``MBYN_SECURITY=scram``, or a running local cluster started secured): a client config file
  ``var/kafka/client-<principal>.properties`` (mode 0600: SASL_PLAINTEXT, SCRAM-SHA-512 and the principal's
  password from the local secret store), passed with the option the tool expects (``--producer.config``,
  ``--consumer.config`` or ``--command-config``). The principal is ``--principal`` if given, else the one
  the environment names (``MBYN_KAFKA_USERNAME``), else ``admin`` for a tool or action that changes the
  cluster (console-producer, acls, delete-records, or an argument such as ``--create`` / ``--alter`` /
  ``--reset-offsets``), and the read-only ``viewer`` for the rest (``admin`` where no viewer exists).
* Secured console-consumer without ``--group``: a throwaway group ``<prefix><principal>-console-<hex>``
  with auto-commit off (the ACLs only let a principal join groups named for it).

Java clients authenticate with SCRAM against Kafka 4.x on every machine, which librdkafka before 2.6.1
(e.g. Debian 12's kcat) does not: this is the external client that works in both modes.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mbyn.errors import ConfigError
from mbyn.files import atomic_write
from mbyn.kafka.clients import MECHANISM
from mbyn.kafka.security import ADMIN, VIEWER, as_principal, principal_environment, principals
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
    """admin for a tool or arguments that change the cluster, else the viewer (admin where it does not exist)."""
    if TOOLS[name].writes or any(a.split("=", 1)[0] in WRITE_ARGUMENTS for a in args):
        return ADMIN
    return VIEWER if VIEWER in known else ADMIN


def client_properties(username: str, password: str) -> str:
    """The Java client configuration of a SCRAM principal (a ``.properties`` file)."""
    if any(c in username + password for c in '"\\\n'):
        raise ConfigError(f"the credentials of {username!r} contain a quote, backslash or newline, which the "
                          "JAAS line of a Java client config cannot carry unescaped")
    return ("security.protocol=SASL_PLAINTEXT\n"
            f"sasl.mechanism={MECHANISM}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{username}" password="{password}";\n')


def write_client_config(settings: Settings, username: str, password: str) -> Path:
    """``var/kafka/client-<principal>.properties`` (mode 0600; rewritten on every call, so it follows the store)."""
    path = settings.kafka_dir / f"client-{username}.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, client_properties(username, password).encode(), mode=0o600)
    return path


def tool_command(settings: Settings, name: str, args: Sequence[str], principal: str | None = None) -> list[str]:
    """The java command line of tool ``name`` with ``args``; ConfigError naming the tools when ``name`` is unknown."""
    if name not in TOOLS:
        raise ConfigError(f"unknown Kafka tool {name!r}; known: {tool_names()}")
    tool = TOOLS[name]
    settings = effective_settings(settings)
    extra: list[str] = []
    if not _given(args, "--bootstrap-server", "--bootstrap-controller"):
        extra += ["--bootstrap-server", settings.bootstrap()]
    if settings.security == "scram" and not _given(args, tool.config_option):
        if principal is not None:
            username, password = principal, principal_environment(settings, principal)["MBYN_KAFKA_PASSWORD"]
        else:
            chosen = as_principal(settings, default_principal(name, args, principals()))
            assert chosen.kafka_username and chosen.kafka_password is not None  # as_principal sets both when secured
            username, password = chosen.kafka_username, chosen.kafka_password.get_secret_value()
        extra += [tool.config_option, str(write_client_config(settings, username, password))]
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
    """
    cmd = tool_command(settings, name, args, principal)
    cluster.ensure_jars(settings)
    proc = subprocess.Popen(cmd)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.stdout.flush()
