"""docker-compose.yml is valid Compose and runs only what the project has.

There is no Docker engine on the build machines, so the file is checked, not run: against the Compose
Specification's JSON Schema (``tests/data/compose-spec.json``, see ``tests/data/README.md``), and against
the project itself — every ``mbyn`` and ``airflow`` command line parses with the real parsers, every file
it mounts or builds from exists, every dependency exists and can become healthy, every registered
producer and consumer has a worker service, and nothing without a login is published beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from typing import Any

import pytest
import yaml

from mbyn.settings import PROJECT_ROOT, load_settings
from mbyn.workers import WORKERS

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
SECURED_FILE = PROJECT_ROOT / "docker-compose.secured.yml"
SCHEMA_FILE = PROJECT_ROOT / "tests" / "data" / "compose-spec.json"
INTERNAL_BOOTSTRAP = "kafka:29092"


def interpolate(value: Any) -> Any:
    """Compose variable substitution with every variable unset.

    ``${X:-d}`` and ``${X-d}`` become d, ``${X}`` and ``${X:?message}`` (required) become "", ``$$`` becomes $.
    """
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return (match.group("default") or "") if match.group("op") == "-" else ""

    return re.sub(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?(?P<op>[-?])(?P<default>[^}]*))?\}", replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as fh:
        raw = yaml.safe_load(fh)  # resolves the file's YAML anchors and << merge keys, as Compose does
    result: dict[str, Any] = interpolate(raw)
    return result


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="module")
def mbyn_parser() -> argparse.ArgumentParser:
    from mbyn.cli.main import build_parser

    return build_parser()


def parse_mbyn(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None if ``mbyn <argv>`` parses, else argparse's complaint."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "exit"
    return None if callable(getattr(args, "handler", None)) else "no handler (incomplete command)"


def parse_airflow(argv: list[str]) -> str | None:
    """None if ``airflow <argv>`` names a real command and its options, else why not.

    Walks Airflow's own CLI definition (``airflow.cli.cli_config``) and parses the options with the
    command's real ``Arg`` definitions — the full ``get_parser()`` would load every provider (slow).
    """
    from airflow.cli import cli_config

    commands = {c.name: c for c in cli_config.core_commands}
    if not argv or argv[0] not in commands:
        return f"unknown airflow command {argv[:1]}"
    command: Any = commands[argv[0]]
    rest = argv[1:]
    if isinstance(command, cli_config.GroupCommand):
        subs = {c.name: c for c in command.subcommands}
        if not rest or rest[0] not in subs:
            return f"unknown `airflow {argv[0]}` sub-command {rest[:1]}; known: {sorted(subs)}"
        command, rest = subs[rest[0]], rest[1:]
    parser = argparse.ArgumentParser(prog=f"airflow {command.name}", exit_on_error=False)
    for arg in command.args:
        arg.add_to_parser(parser)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args(rest)
        except (SystemExit, argparse.ArgumentError) as exc:
            return f"{exc} {err.getvalue().strip()}"
    return None


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return value.split() if isinstance(value, str) else list(value)


def uses_mbyn_image(service: dict[str, Any]) -> bool:
    return "build" in service


# The file as a whole ----------------------------------------------------------------------------------


def test_schema_file_is_the_compose_spec() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert "service" in schema.get("definitions", schema.get("$defs", {}))


def test_compose_file_satisfies_the_compose_specification(compose: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "docker-compose.yml violates the Compose Specification:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in errors)


def test_schema_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    """The validation above has teeth: a typo'd key and a wrong depends_on condition are refused."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    broken = json.loads(json.dumps(compose))
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["kafdrop"]["depends_on"]["kafka"]["condition"] = "service_ready"
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("intervall" in m for m in messages), messages
    assert any("service_ready" in m for m in messages), messages


# Commands ---------------------------------------------------------------------------------------------


def test_every_command_exists_in_the_project(services: dict[str, dict[str, Any]],
                                             mbyn_parser: argparse.ArgumentParser) -> None:
    problems = []
    for name, service in services.items():
        entrypoint, command = as_argv(service.get("entrypoint")), as_argv(service.get("command"))
        if entrypoint == ["mbyn"]:
            why = parse_mbyn(mbyn_parser, command)
            if why:
                problems.append(f"{name}: `mbyn {' '.join(command)}`: {why}")
        elif uses_mbyn_image(service):
            if entrypoint:
                problems.append(f"{name}: unexpected entrypoint {entrypoint} (use [mbyn] or the image's airflow)")
                continue
            why = parse_airflow(command)  # the Airflow image's entrypoint runs `airflow <command>`
            if why:
                problems.append(f"{name}: `airflow {' '.join(command)}`: {why}")
        elif entrypoint or command:
            problems.append(f"{name}: runs {entrypoint + command} in a third-party image; check it by hand and "
                            "teach this test about it")
    assert not problems, "\n".join(problems)


def test_every_healthcheck_command_exists(services: dict[str, dict[str, Any]],
                                          mbyn_parser: argparse.ArgumentParser) -> None:
    problems = []
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        if not test or test[0] != "CMD":
            continue  # CMD-SHELL probes use the image's own tools (pg_isready, kafka-broker-api-versions.sh)
        program, args = test[1], test[2:]
        if program == "airflow":
            why = parse_airflow(args)
        elif program == "mbyn":
            why = parse_mbyn(mbyn_parser, args)
        elif program == "python" and args[:1] == ["-c"]:
            try:
                compile(args[1], f"<{name} healthcheck>", "exec")
                why = None
            except SyntaxError as exc:
                why = str(exc)
        elif program == "curl":
            why = None if any(a.startswith("http://localhost:") for a in args) else "curl must probe localhost"
        else:
            why = f"unknown probe program {program!r}"
        if why:
            problems.append(f"{name}: healthcheck {test[1:]}: {why}")
    assert not problems, "\n".join(problems)


def test_named_healthchecks_probe_what_they_should(services: dict[str, dict[str, Any]]) -> None:
    def probe(service: str) -> str:
        return " ".join(as_argv(services[service]["healthcheck"]["test"]))

    assert "kafka-broker-api-versions.sh" in probe("kafka")
    assert "pg_isready" in probe("postgres")
    assert "/api/v2/version" in probe("airflow-api-server")
    assert ":8974/health" in probe("airflow-scheduler")
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"


# Files ------------------------------------------------------------------------------------------------


def test_every_referenced_file_exists(services: dict[str, dict[str, Any]]) -> None:
    missing = []
    dockerfiles = set()
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = PROJECT_ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            for path in (context, dockerfile):
                if not path.exists():
                    missing.append(f"{name}: build {path}")
            dockerfiles.add((context, dockerfile))
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (PROJECT_ROOT / source).exists():
                missing.append(f"{name}: bind mount source {source}")
    for context, dockerfile in dockerfiles:
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if not words or words[0].upper() not in ("COPY", "ADD"):
                continue
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            for source in sources:
                if "*" not in source and not (context / source).exists():
                    missing.append(f"{dockerfile.name}: {words[0]} source {source}")
    assert not missing, "referenced but missing:\n" + "\n".join(missing)


# Dependencies and exposure ----------------------------------------------------------------------------


def test_dependencies_exist_and_can_be_met(services: dict[str, dict[str, Any]]) -> None:
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on as a list only waits for start; give each a condition")
            continue
        for target, spec in depends.items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target!r}")
                continue
            condition = spec["condition"]
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                problems.append(f"{name}: waits for {target} to complete, but {target} restarts (not a one-shot)")
            if condition == "service_started":
                problems.append(f"{name}: depends on {target} merely started; wait for healthy or completed")
    assert not problems, "\n".join(problems)


def test_no_sleep_instead_of_a_dependency(services: dict[str, dict[str, Any]]) -> None:
    sleepers = [n for n, s in services.items()
                if "sleep" in " ".join(as_argv(s.get("entrypoint")) + as_argv(s.get("command")))]
    assert not sleepers


def test_every_published_port_is_local_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
    assert "ports" not in services["kafdrop"], "Kafdrop has no login: publish it only through kafdrop-proxy"
    assert services["kafdrop"]["expose"] == ["9000"]


def test_kafdrop_is_reachable_from_the_host_only_through_a_login(services: dict[str, dict[str, Any]],
                                                                 tmp_path: Any) -> None:
    import subprocess

    proxy = services["kafdrop-proxy"]
    assert proxy["ports"] == ["127.0.0.1:9000:8080"]
    assert proxy["depends_on"]["kafdrop"]["condition"] == "service_healthy"
    assert set(proxy["volumes"]) == {
        "./docker/kafdrop-proxy/default.conf:/etc/nginx/conf.d/default.conf:ro",
        "./docker/kafdrop-proxy/10-htpasswd.sh:/docker-entrypoint.d/10-htpasswd.sh:ro"}
    config = (PROJECT_ROOT / "docker" / "kafdrop-proxy" / "default.conf").read_text()
    assert "proxy_pass http://kafdrop:9000;" in config
    location = config.split("location / {", 1)[1]
    assert "auth_basic \"Kafdrop\";" in location and "auth_basic_user_file /etc/nginx/kafdrop.htpasswd;" in location
    assert proxy["environment"]["KAFDROP_PASSWORD"] == "", "no default password: the user must set one"
    script = PROJECT_ROOT / "docker" / "kafdrop-proxy" / "10-htpasswd.sh"
    refused = subprocess.run(["sh", str(script)], env={"PATH": "/usr/bin:/bin", "KAFDROP_PASSWORD": ""},
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "KAFDROP_PASSWORD" in refused.stderr


# Secrets and roles --------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN")
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


@pytest.mark.parametrize("path", [COMPOSE_FILE, SECURED_FILE], ids=lambda p: p.name)
def test_every_secret_is_required_and_none_is_written_in_the_file(path: Any) -> None:
    text = path.read_text()
    secrets = [m for m in VARIABLE.finditer(text) if SECRET_NAME.search(m.group("name"))]
    assert len(secrets) >= 5
    for match in secrets:  # ${X:?message}: compose stops and names X when it is unset or empty
        rest = match.group("rest")
        assert rest.startswith(":?") and match.group("name") in rest, \
            f"{match.group(0)}: a secret must be required (${{{match.group('name')}:?set {match.group('name')} ...}})"
    for user, password in re.findall(r"://([^:/@\s\"']+):([^@\s\"']+)@", text):  # URLs with a login
        assert password.startswith("${"), f"a fixed password for {user} in {path.name}"
    assert "local-only" not in text and "admin:admin@" not in text


def test_env_example_names_every_required_secret_of_the_base_file() -> None:
    required = {m.group("name") for m in VARIABLE.finditer(COMPOSE_FILE.read_text()) if m.group("rest")[:2] == ":?"}
    assert {"MBYN_POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "KAFDROP_PASSWORD", "AIRFLOW_FERNET_KEY",
            "MBYN_POSTGRES_LOADER_PASSWORD", "MBYN_POSTGRES_READER_PASSWORD", "AIRFLOW_DB_PASSWORD"} <= required
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    assert required <= set(example), f"missing from .env.example: {sorted(required - set(example))}"
    # ${VAR:?} refuses an unset or empty value only: a placeholder such as change-me, copied with the example, would
    # start the stack with passwords and a JWT secret everybody knows. Empty, compose stops until each is filled in.
    assert {name: value for name, value in example.items() if value.strip()} == {}, "a secret has a value"
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().split()


def test_no_service_works_as_the_postgres_superuser(services: dict[str, dict[str, Any]]) -> None:
    from sqlalchemy.engine import make_url

    from mbyn.settings import POSTGRES_LOADER, POSTGRES_READER

    superuser = services["postgres"]["environment"]["POSTGRES_USER"]
    users: dict[str, set[str]] = {}
    for name, service in services.items():
        env = service.get("environment", {})
        for var in ("MBYN_WAREHOUSE_URL", "MBYN_WAREHOUSE_READ_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
            if var in env:
                users.setdefault(var, set()).add(str(make_url(env[var]).username))
                assert make_url(env[var]).username != superuser, f"{name}: {var} logs in as the superuser"
    assert users == {"MBYN_WAREHOUSE_URL": {POSTGRES_LOADER}, "MBYN_WAREHOUSE_READ_URL": {POSTGRES_READER},
                     "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": {"airflow"}}
    view = services["airflow-api-server"]["environment"]  # the pipeline view runs in the API server
    assert make_url(view["MBYN_WAREHOUSE_READ_URL"]).username == POSTGRES_READER

    script = (PROJECT_ROOT / "docker" / "postgres" / "initdb" / "10-roles.sh").read_text()
    for statement in (f"CREATE ROLE {POSTGRES_LOADER} LOGIN", f"CREATE ROLE {POSTGRES_READER} LOGIN",
                      f"ALTER ROLE {POSTGRES_READER} SET default_transaction_read_only = on",
                      "CREATE DATABASE airflow OWNER airflow", "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                      f"GRANT USAGE ON SCHEMA public TO {POSTGRES_READER};"):
        assert statement in script, statement
    assert f"TO {POSTGRES_READER}" not in script.replace(f"GRANT USAGE ON SCHEMA public TO {POSTGRES_READER}", "") \
        .replace(f"GRANT CONNECT ON DATABASE mbyn TO {POSTGRES_READER}", "") \
        .replace(f"GRANT SELECT ON TABLES TO {POSTGRES_READER}", ""), "the reader gets more than SELECT"
    read = {shell or psql for shell, psql in re.findall(r"\$([A-Z_]+)|\\getenv \w+ ([A-Z_]+)", script)}
    read -= {"POSTGRES_USER"}
    assert read and read <= set(services["postgres"]["environment"]), "the init script reads a variable not passed"
    assert {"./docker/postgres/initdb:/docker-entrypoint-initdb.d:ro"} <= set(services["postgres"]["volumes"])


def test_airflow_users_are_an_admin_and_a_read_only_viewer(services: dict[str, dict[str, Any]]) -> None:
    from mbyn.local.airflow import USERS

    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == ",".join(f"{u}:{r}" for u, r in USERS.items())
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/opt/mbyn/var/")  # a volume


def test_kafdrop_and_workers_use_the_internal_listener(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]["environment"]
    assert f"INTERNAL://{INTERNAL_BOOTSTRAP}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"):
        assert int(kafka[key]) == 1, key
    assert services["kafdrop"]["environment"]["KAFKA_BROKERCONNECT"] == INTERNAL_BOOTSTRAP
    for name, service in services.items():
        env = service.get("environment", {})
        if "MBYN_BOOTSTRAP_SERVERS" in env:
            assert env["MBYN_BOOTSTRAP_SERVERS"] == INTERNAL_BOOTSTRAP, name


def test_mbyn_environment_is_valid_settings(services: dict[str, dict[str, Any]]) -> None:
    """Every service's MBYN_* variables pass the project's own settings validation."""
    checked = 0
    for name, service in services.items():
        env = service.get("environment", {})
        overrides = {k.removeprefix("MBYN_").lower(): v for k, v in env.items() if k.startswith("MBYN_")}
        if not overrides:
            continue
        settings = load_settings(**overrides)
        assert settings.warehouse().startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in settings.warehouse(), name
        checked += 1
    assert checked >= 3


def test_airflow_reaches_the_api_server_and_kafka(services: dict[str, dict[str, Any]]) -> None:
    airflow = [n for n, s in services.items() if as_argv(s.get("command"))[:1] in
               (["api-server"], ["scheduler"], ["dag-processor"], ["triggerer"])]
    assert sorted(airflow) == ["airflow-api-server", "airflow-dag-processor", "airflow-scheduler", "airflow-triggerer"]
    secrets = set()
    for name in airflow:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
        secrets.add(env["AIRFLOW__API_AUTH__JWT_SECRET"])
        conn = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
        assert conn["conn_type"] == "kafka"
        assert conn["extra"]["bootstrap.servers"] == INTERNAL_BOOTSTRAP
        assert conn["extra"]["enable.auto.commit"] is False
        assert "postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert {"./dags:/opt/airflow/dags", "./plugins:/opt/airflow/plugins",
                "./include:/opt/mbyn/include"} <= set(services[name]["volumes"])
    assert len(secrets) == 1, "all Airflow components must share one JWT secret"
    assert as_argv(services["airflow-init"]["command"]) == ["db", "migrate"]


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    images = {s["image"] for s in services.values() if "image" in s and "build" not in s}
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{image} is not pinned"
    assert re.fullmatch(r"apache/kafka:4\.1\.\d+", services["kafka"]["image"])
    dockerfile = (PROJECT_ROOT / "docker" / "airflow" / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile


# Registries -------------------------------------------------------------------------------------------


def worker_commands(services: dict[str, dict[str, Any]]) -> dict[tuple[str, ...], str]:
    return {tuple(as_argv(s.get("command"))): n
            for n, s in services.items() if as_argv(s.get("entrypoint")) == ["mbyn"]}


@pytest.mark.parametrize("kind", ["produce", "consume"])
def test_every_registered_worker_has_a_scalable_service(services: dict[str, dict[str, Any]], kind: str) -> None:
    registry = [w.name for w in WORKERS.values() if w.verb == kind]
    assert registry, f"the {kind} registry is empty"
    commands = worker_commands(services)
    missing = [name for name in registry if (kind, name) not in commands]
    assert not missing, f"registered but without a `mbyn {kind} <name>` service in docker-compose.yml: {missing}"
    for name in registry:
        service_name = commands[(kind, name)]
        service = services[service_name]
        assert service_name == f"{kind}-{name}", f"name the service {kind}-{name}"
        assert "container_name" not in service and "ports" not in service, f"{service_name} could not be scaled"
        assert service["deploy"]["replicas"] >= 1
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_no_worker_service_without_a_registration(services: dict[str, dict[str, Any]]) -> None:
    known = {(w.verb, w.name) for w in WORKERS.values()}
    stray = [f"{name}: mbyn {' '.join(cmd)}" for cmd, name in worker_commands(services).items()
             if cmd[:1] in (("produce",), ("consume",)) and cmd[:2] not in known]
    assert not stray, "worker services for names no registry knows:\n" + "\n".join(stray)


# The secured variant (docker-compose.secured.yml) -------------------------------------------------------


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file for what these files use: mappings merge, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in override.items()}}
    return override


@pytest.fixture(scope="module")
def secured_raw() -> dict[str, Any]:
    with SECURED_FILE.open() as fh:
        result: dict[str, Any] = yaml.safe_load(fh)
    return result


@pytest.fixture(scope="module")
def secured(compose: dict[str, Any], secured_raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = merge(compose, interpolate(secured_raw))["services"]
    return merged


def password_var(principal: str) -> str:
    return "KAFKA_" + principal.upper().replace("-", "_") + "_PASSWORD"


def test_secured_file_satisfies_the_compose_specification(compose: dict[str, Any],
                                                          secured_raw: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    merged = merge(compose, interpolate(secured_raw))
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(merged))
    assert not errors, [e.message[:200] for e in errors]


def test_secured_broker_authenticates_everyone_and_denies_without_an_acl(secured: dict[str, dict[str, Any]]) -> None:
    kafka = secured["kafka"]["environment"]
    assert all(p.endswith(":SASL_PLAINTEXT") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:admin"
    assert kafka["KAFKA_LISTENER_NAME_HOST_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"  # no PLAIN from the host
    assert "--command-config" in " ".join(as_argv(secured["kafka"]["healthcheck"]["test"]))
    assert not [k for k in kafka if k.startswith("KAFKA_") and k.endswith("_PASSWORD")], \
        "the apache/kafka image turns KAFKA_* variables into broker settings"


def test_secured_every_principal_gets_a_scram_user_from_the_environment(secured: dict[str, dict[str, Any]],
                                                                         secured_raw: dict[str, Any]) -> None:
    from mbyn.kafka.security import principals

    job = secured["kafka-users"]
    assert job["environment"]["MBYN_PRINCIPALS"].split() == principals()
    raw_env = secured_raw["services"]["kafka-users"]["environment"]
    for principal in principals():
        var = password_var(principal)
        assert raw_env[var].startswith("${" + var + ":?"), f"{var} must be required, with no default"
    assert (PROJECT_ROOT / "docker" / "kafka" / "create-scram-users.sh").exists()
    assert secured["topics"]["environment"]["MBYN_KAFKA_USERNAME"] == "admin"
    assert secured["topics"]["depends_on"]["kafka-users"]["condition"] == "service_completed_successfully"


def test_secured_each_worker_authenticates_as_its_own_service(secured: dict[str, dict[str, Any]],
                                                              secured_raw: dict[str, Any]) -> None:
    workers = {n: s for n, s in secured.items() if as_argv(s.get("entrypoint")) == ["mbyn"]
               and as_argv(s.get("command"))[:1] in (["produce"], ["consume"])}
    assert len(workers) >= 13
    for name, service in workers.items():
        service_name = as_argv(service["command"])[1]
        env = service["environment"]
        assert env["MBYN_SECURITY"] == "scram" and env["MBYN_KAFKA_USERNAME"] == service_name, name
        raw = secured_raw["services"][name]["environment"]["MBYN_KAFKA_PASSWORD"]
        assert raw.startswith("${" + password_var(service_name) + ":?"), name
        overrides = {k.removeprefix("MBYN_").lower(): v for k, v in env.items() if k.startswith("MBYN_")}
        assert load_settings(**overrides).kafka_username == service_name


def test_secured_airflow_and_kafdrop_authenticate(secured: dict[str, dict[str, Any]]) -> None:
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = secured[name]["environment"]
        assert env["MBYN_KAFKA_USERNAME"] == "airflow"
        for conn_var in ("AIRFLOW_CONN_KAFKA_DEFAULT", "AIRFLOW_CONN_KAFKA_INCIDENTS", "AIRFLOW_CONN_KAFKA_LAG_ALERTS"):
            extra = json.loads(env[conn_var])["extra"]
            assert extra["security.protocol"] == "SASL_PLAINTEXT" and extra["sasl.mechanism"] == "SCRAM-SHA-512"
            assert extra["sasl.username"] == "airflow" and extra["enable.auto.commit"] is False
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]  # the base settings survive the merge
        # ... and the pipeline view in it reads as the read-only viewer, with its own required password
        from mbyn.kafka.security import as_viewer

        overrides = {k.removeprefix("MBYN_").lower(): v for k, v in env.items() if k.startswith("MBYN_")}
        assert as_viewer(load_settings(**overrides)).kafka_username == "viewer"
    kafdrop = secured["kafdrop"]
    assert "ports" not in kafdrop
    assert as_argv(kafdrop["entrypoint"]) == ["/bin/sh", "/opt/mbyn/secured-entrypoint.sh"]
    assert (PROJECT_ROOT / "docker" / "kafdrop" / "secured-entrypoint.sh").exists()
    assert "username=\\\"kafdrop\\\"" in (PROJECT_ROOT / "docker" / "kafdrop" / "secured-entrypoint.sh").read_text()
