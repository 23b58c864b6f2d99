"""The secured mode (``MBYN_SECURITY=scram``): SASL/SCRAM principals, their ACLs and the local secret store.

* **Clients.** Every client's configuration starts from ``mbyn.kafka.clients.client_config``: the bootstrap
  servers, plus SASL/SCRAM-SHA-512 and ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD`` when secured.
* **One principal per service.** The principals are the workers of ``mbyn.workers`` and the other services
  named in the catalog's ``writers`` / ``readers`` lists (``include/topics.yaml``; ``airflow``), plus
  ``kafdrop`` (the compose file's topic browser: reads every topic, describes every group), ``viewer`` (the
  same rights, for the read-only commands next to a running pipeline — ``mbyn status``, ``mbyn report`` — and
  the pipeline view, which switches to it inside Airflow: ``as_viewer``) and ``admin`` (the brokers themselves
  and `mbyn kafka up` / `mbyn topics apply` / `mbyn replay` / `mbyn dlq replay`; a super user).
* **ACLs from the catalog** (``acl_plan``): a writer gets WRITE on its topics (WRITE implies DESCRIBE)
  and IDEMPOTENT_WRITE on the cluster; a reader gets READ on its topics and READ on its own consumer
  groups only (``Worker.groups``, ``OTHER_GROUPS``) — ``<prefix><group>`` literally, and for readers of a
  compacted topic also ``<prefix><group>-table-`` as a prefix (the in-memory table readers of
  ``mbyn.consumers.tables``). A transactional worker (the order-enricher) also gets its
  transactional ids (``<prefix><name>-`` prefixed), a monitor (the lag-monitor) DESCRIBE on every topic and
  group of the prefix and READ on every topic (the timestamp of each group's next unread record: seconds
  behind). Every consumer may write ``dead-letters`` (the catalog lists them). Everything else
  is refused (``allow.everyone.if.no.acl.found=false``). ``apply_acls`` creates the plan with the admin
  client; creating an ACL that exists is a no-op in Kafka, so it is idempotent.
* **Local secret store.** For the cluster of `mbyn kafka up --security scram`, one random password per
  principal is generated once into ``var/kafka/scram-credentials.json`` (mode 0600, never in git). The
  brokers get them at format time (``StorageTool format --add-scram``), so inter-broker authentication
  works before any broker is up; the supervisor hands each worker its own principal through its
  environment (``principal_environment``). Passwords are only in that file, the brokers' own
  ``server.properties`` (0600) and the environment of the processes that use them.

Broker listeners when secured: the client/inter-broker listener ``SASL_PLAINTEXT`` with SCRAM-SHA-512
(credentials in the KRaft metadata log), the controller listener ``CONTROLLER`` with SASL/PLAIN whose only
user is ``admin`` (static JAAS: controllers must authenticate each other before any metadata exists —
SCRAM on the controller listener is a known trap, KAFKA-15513). Both listeners' principal is
``User:admin``, the only super user. No TLS: this mode authenticates and authorizes; encrypting the
traffic (SASL_SSL) is the step for a network that is not the loopback interface.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from mbyn.catalog import Catalog, load_catalog
from mbyn.errors import AclError, ConfigError
from mbyn.files import atomic_write_json
from mbyn.kafka.clients import MECHANISM, admin_client, client_config
from mbyn.kafka.inspect import PROBE_GROUP
from mbyn.settings import Settings, get_settings
from mbyn.workers import WORKERS

ADMIN = "admin"
#: The read-only principal of the commands that only look (``mbyn status``, ``mbyn report``).
VIEWER = "viewer"
#: Read-only browsers (Kafdrop in docker-compose, the viewer): read every topic of the prefix, describe every group.
BROWSERS = ("kafdrop", VIEWER)
#: Consumer group ids (without the prefix) of the services that are not workers (workers declare theirs in
#: ``mbyn.workers``): Airflow's batch reads, incident watcher and lag-alert watcher
#: (``mbyn.orchestration.connections``).
AIRFLOW_BATCH_GROUP = "mbyn-airflow-batch"
AIRFLOW_INCIDENT_GROUP = "mbyn-incident-watcher"
AIRFLOW_LAG_ALERT_GROUP = "mbyn-lag-alert-watcher"
OTHER_GROUPS: dict[str, tuple[str, ...]] = {"airflow": (AIRFLOW_BATCH_GROUP, AIRFLOW_INCIDENT_GROUP,
                                                        AIRFLOW_LAG_ALERT_GROUP)}
CREDENTIALS_FILE = "scram-credentials.json"
#: How a principal added to mbyn after the secured cluster was created (e.g. ``viewer``) gets its user.
NEW_PRINCIPALS_HINT = ("`mbyn topics apply` adds the users of new services to the running cluster; "
                       "`mbyn kafka up --security scram` when it is not running")


# Principals and ACLs ----------------------------------------------------------------------------------


def principals(catalog: Catalog | None = None) -> list[str]:
    """Every principal of the secured mode: admin, the workers, the catalog's writers and readers, browsers."""
    catalog = catalog or load_catalog()
    names = {n for t in catalog.topics.values() for n in (*t.writers, *t.readers)} | set(WORKERS) | set(BROWSERS)
    return [ADMIN, *sorted(names - {ADMIN})]


def groups_of(service: str) -> tuple[str, ...]:
    """The consumer group ids (without prefix) ``service`` reads with: a worker's ``groups``, else
    ``OTHER_GROUPS``, else its name."""
    if service in WORKERS:
        return WORKERS[service].groups
    return OTHER_GROUPS.get(service, (service,))


@dataclass(frozen=True, order=True)
class AclRule:
    """One ALLOW ACL: ``principal`` may do ``operation`` on the resource (``pattern`` literal or prefixed)."""

    principal: str
    resource: str  # topic | group | transactional_id | cluster
    name: str
    pattern: str  # literal | prefixed
    operation: str  # read | write | describe | describe_configs | idempotent_write

    def line(self) -> str:
        star = "*" if self.pattern == "prefixed" else ""
        return f"User:{self.principal:<18} {self.operation.upper():<16} {self.resource} {self.name}{star}"


def acl_plan(catalog: Catalog | None = None, prefix: str = "") -> list[AclRule]:
    """The ACLs of every principal, derived from the catalog's ``writers`` / ``readers`` and the workers'
    groups, transactions and monitoring (sorted, no repeats)."""
    catalog = catalog or load_catalog()
    rules: set[AclRule] = set()
    for topic in catalog.topics.values():
        physical = prefix + topic.name
        for writer in topic.writers:
            rules.add(AclRule(writer, "topic", physical, "literal", "write"))
            rules.add(AclRule(writer, "cluster", "kafka-cluster", "literal", "idempotent_write"))
        for reader in topic.readers:
            rules.add(AclRule(reader, "topic", physical, "literal", "read"))
            for group in groups_of(reader):
                rules.add(AclRule(reader, "group", prefix + group, "literal", "read"))
                if topic.compacted:  # read in full as an in-memory table (consumers.tables.TopicTable)
                    rules.add(AclRule(reader, "group", f"{prefix}{group}-table-", "prefixed", "read"))
    everything = (prefix, "prefixed") if prefix else ("*", "literal")  # Kafka refuses an empty prefix
    for worker in WORKERS.values():
        if worker.transactional:
            rules.add(AclRule(worker.name, "transactional_id", f"{prefix}{worker.name}-", "prefixed", "write"))
        if worker.monitor:
            rules.add(AclRule(worker.name, "topic", *everything, "describe"))
            rules.add(AclRule(worker.name, "group", *everything, "describe"))
            # ... and READ: seconds behind is the timestamp of each group's next unread record, fetched by an
            # assign-only reader (``mbyn.kafka.inspect.lag_reader``, group id ``mbyn-probe-…``, never committing)
            rules.add(AclRule(worker.name, "topic", *everything, "read"))
            rules.add(AclRule(worker.name, "group", PROBE_GROUP, "prefixed", "describe"))
    for browser in BROWSERS:
        rules.add(AclRule(browser, "topic", *everything, "read"))
        rules.add(AclRule(browser, "topic", *everything, "describe_configs"))
        rules.add(AclRule(browser, "group", *everything, "describe"))
    # the viewer's assign-only readers (mbyn.kafka.inspect.reader) carry an unprefixed probe group id
    rules.add(AclRule(VIEWER, "group", PROBE_GROUP, "prefixed", "describe"))
    # ... and READ on its own groups only (`mbyn kafka tool console-consumer`): never a pipeline group's offsets
    rules.add(AclRule(VIEWER, "group", f"{prefix}{VIEWER}-", "prefixed", "read"))
    return sorted(rules)


def _binding(rule: AclRule) -> AclBinding:
    restype = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER,
               "transactional_id": ResourceType.TRANSACTIONAL_ID}[rule.resource]
    pattern = ResourcePatternType.PREFIXED if rule.pattern == "prefixed" else ResourcePatternType.LITERAL
    return AclBinding(restype, rule.name, pattern, f"User:{rule.principal}", "*",
                      AclOperation[rule.operation.upper()], AclPermissionType.ALLOW)


def apply_acls(settings: Settings, catalog: Catalog | None = None) -> list[AclRule]:
    """Create the plan's ACLs for ``settings.topic_prefix`` (idempotent); AclError listing what failed."""
    plan = acl_plan(catalog, settings.topic_prefix)
    client = admin_client(settings)
    futures = client.create_acls([_binding(r) for r in plan], request_timeout=30)
    failures = []
    for rule, future in zip(plan, futures.values(), strict=True):
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - KafkaException carries the broker's reason
            failures.append(f"{rule.line()}: {exc}")
    if failures:
        raise AclError("creating ACLs failed (is the cluster secured and the client the admin?):\n  "
                       + "\n  ".join(failures))
    return plan


def ensure_users(settings: Settings, credentials: dict[str, str]) -> list[str]:
    """Create the SCRAM users the cluster does not know yet (a service added after the format); the new names."""
    client = admin_client(settings)
    described = client.describe_user_scram_credentials(request_timeout=30)  # no names: one future, all users
    assert isinstance(described, Future)
    known = set(described.result())
    missing = [n for n in credentials if n not in known]
    if missing:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        changes: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(n, info, credentials[n].encode()) for n in missing]
        for future in client.alter_user_scram_credentials(changes, request_timeout=30).values():
            future.result()
    return missing


# The local cluster's secret store ---------------------------------------------------------------------


def credentials_file(settings: Settings) -> Path:
    return settings.kafka_dir / CREDENTIALS_FILE


def local_credentials(settings: Settings, create: bool = False) -> dict[str, str]:
    """principal → password of the local cluster; with ``create``, generate missing ones (file mode 0600).

    ConfigError when the file is missing and ``create`` is false (the cluster was never started secured).
    """
    path = credentials_file(settings)
    try:
        stored: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"no local SCRAM credentials at {path}; start the cluster with "
                              "`mbyn kafka up --security scram` first") from None
        stored = {}
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); delete it and the secured cluster's data "
                          "folder (var/kafka/n*-scram) to start over") from None
    wanted = principals()
    if create and any(name not in stored for name in wanted):
        stored.update({name: secrets.token_urlsafe(24) for name in wanted if name not in stored})
        atomic_write_json(path, stored, mode=0o600, indent=2, sort_keys=True)
    return stored


def principal_environment(settings: Settings, principal: str) -> dict[str, str]:
    """``MBYN_SECURITY`` / ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD`` of ``principal`` from the local store."""
    store = local_credentials(settings)
    if principal not in store:
        raise ConfigError(f"no SCRAM credentials for {principal!r} in {credentials_file(settings)}; known: "
                          f"{', '.join(sorted(store))} ({NEW_PRINCIPALS_HINT})")
    return {"MBYN_SECURITY": "scram", "MBYN_KAFKA_USERNAME": principal, "MBYN_KAFKA_PASSWORD": store[principal]}


def ensure_local_users(settings: Settings) -> list[str]:
    """Secured local cluster, as its admin from the local store: give the principals added to mbyn since the
    store was written (e.g. ``viewer``) a password in the store and a SCRAM user in the cluster; the new users.

    Nothing (``[]``) in open mode, without a local store, or when ``settings`` authenticate as another user
    or with another password than the local store's admin (the environment names another cluster's user).
    """
    if settings.security == "open" or not credentials_file(settings).exists():
        return []
    admin = as_principal(settings)
    password = admin.kafka_password.get_secret_value() if admin.kafka_password is not None else None
    if admin.kafka_username != ADMIN or password != local_credentials(settings).get(ADMIN):
        return []
    return ensure_users(admin, local_credentials(settings, create=True))


def security_environment(settings: Settings) -> dict[str, str]:
    """The ``MBYN_SECURITY`` / ``MBYN_KAFKA_*`` variables that make a child process authenticate like ``settings``
    (only ``MBYN_SECURITY=open`` in open mode): for launched Java/Go services and Airflow."""
    if settings.security == "open":
        return {"MBYN_SECURITY": "open"}
    config = client_config(settings)
    return {"MBYN_SECURITY": "scram", "MBYN_KAFKA_USERNAME": config["sasl.username"],
            "MBYN_KAFKA_PASSWORD": config["sasl.password"]}


def as_viewer(settings: Settings) -> Settings:
    """``settings`` authenticating as the read-only ``viewer`` whatever principal the process runs as (inside
    Airflow: ``airflow``, which may not read most topics): what the pipeline view reads with. Its password:
    ``MBYN_VIEWER_KAFKA_PASSWORD``, else the local store (ConfigError naming both when neither has it).
    Open mode: ``settings`` unchanged."""
    if settings.security == "open" or settings.kafka_username == VIEWER:
        return settings
    password = settings.viewer_kafka_password
    if password is None:
        try:
            password = SecretStr(principal_environment(settings, VIEWER)["MBYN_KAFKA_PASSWORD"])
        except ConfigError as exc:
            raise ConfigError(f"the pipeline view reads as the read-only principal {VIEWER!r}: set "
                              f"MBYN_VIEWER_KAFKA_PASSWORD ({exc})") from None
    return settings.model_copy(update={"kafka_username": VIEWER, "kafka_password": password})


def viewer_settings() -> Settings:
    """The process's settings as ``viewer`` (``as_viewer(get_settings())``): the pipeline view's settings (per
    request: a copy of the cached settings, and in the secured mode one read of the 0600 store)."""
    return as_viewer(get_settings())


def as_principal(settings: Settings, principal: str = ADMIN) -> Settings:
    """``settings`` authenticating as ``principal`` from the local store — unless the environment already
    names a user (credentials from the environment always win). Open mode: ``settings`` unchanged."""
    if settings.security == "open" or settings.kafka_username:
        return settings
    env = principal_environment(settings, principal)
    return settings.model_copy(update={"kafka_username": principal,
                                       "kafka_password": SecretStr(env["MBYN_KAFKA_PASSWORD"])})


# The broker side --------------------------------------------------------------------------------------


def _jaas(module: str, username: str, password: str, *extra: str) -> str:
    fields = " ".join([f'username="{username}"', f'password="{password}"', *extra])
    return f"org.apache.kafka.common.security.{module} required {fields};"


def broker_properties(admin_password: str) -> dict[str, str]:
    """The server.properties entries of a secured node (listener names ``SASL_PLAINTEXT`` and ``CONTROLLER``)."""
    return {
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": MECHANISM,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
            _jaas("scram.ScramLoginModule", ADMIN, admin_password),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config":
            _jaas("plain.PlainLoginModule", ADMIN, admin_password, f'user_{ADMIN}="{admin_password}"'),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN}",
    }


def format_arguments(credentials: dict[str, str]) -> list[str]:
    """``--add-scram`` arguments of ``StorageTool format``: every principal's SCRAM-SHA-512 credential."""
    args: list[str] = []
    for name, password in sorted(credentials.items()):
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return args


def acl_table(rules: Iterable[AclRule]) -> str:
    """The plan as a Markdown table (docs): one row per principal, its rights grouped by operation."""
    per: dict[str, dict[str, list[str]]] = {}
    for rule in rules:
        star = "*" if rule.pattern == "prefixed" else ""
        per.setdefault(rule.principal, {}).setdefault(f"{rule.operation} {rule.resource}", []).append(
            f"`{rule.name}{star}`")
    lines = ["| principal | rights |", "|---|---|"]
    for principal, rights in sorted(per.items()):
        cells = "; ".join(f"{op}: {', '.join(names)}" for op, names in sorted(rights.items()))
        lines.append(f"| `{principal}` | {cells} |")
    return "\n".join(lines)
