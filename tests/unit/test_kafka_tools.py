"""`mbyn kafka tool`: the command line each Kafka tool gets — bootstrap servers, and in the secured mode the
principal's client config file (0600) through the option that tool expects."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from mbyn.cli import topics
from mbyn.cli.main import main
from mbyn.errors import ConfigError
from mbyn.kafka import security
from mbyn.kafka.security import ADMIN, VIEWER, credentials_file, ensure_local_users, local_credentials
from mbyn.local import kafka_tools
from mbyn.local.kafka_tools import TOOLS, client_properties, run_tool, tool_command
from mbyn.settings import Settings, load_settings


def _settings(tmp_path: Path, security: str = "open") -> Settings:
    return load_settings(var_dir=tmp_path / "var", bootstrap_servers="127.0.0.1:19092", security=security,
                         topic_prefix="t1-")


def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_open_mode_adds_only_the_bootstrap_servers(tmp_path: Path) -> None:
    cmd = tool_command(_settings(tmp_path), "console-consumer", ["--topic", "t1-orders", "--from-beginning"])
    main_class = TOOLS["console-consumer"].main_class
    assert cmd[cmd.index(main_class) + 1:] == ["--bootstrap-server", "127.0.0.1:19092", "--topic", "t1-orders",
                                               "--from-beginning"]
    assert not any(a.endswith(".config") or a == "--command-config" for a in cmd)
    assert not (tmp_path / "var" / "kafka").exists()
    assert tool_command(_settings(tmp_path), "topics", ["--list"], config_dir=tmp_path / "private") == \
        tool_command(_settings(tmp_path), "topics", ["--list"])


def test_an_explicit_bootstrap_server_or_controller_wins(tmp_path: Path) -> None:
    cmd = tool_command(_settings(tmp_path), "topics", ["--bootstrap-server=127.0.0.1:1", "--list"])
    assert "127.0.0.1:19092" not in cmd and cmd.count("--bootstrap-server=127.0.0.1:1") == 1
    cmd = tool_command(_settings(tmp_path), "metadata-quorum", ["--bootstrap-controller", "127.0.0.1:2", "describe"])
    assert "--bootstrap-server" not in cmd


@pytest.mark.parametrize(("name", "args", "option", "principal"), [
    ("console-producer", ["--topic", "x"], "--producer.config", "admin"),
    ("console-consumer", ["--topic", "x"], "--consumer.config", "reader"),
    ("topics", ["--list"], "--command-config", "reader"),
    ("topics", ["--create", "--topic", "x"], "--command-config", "admin"),
    ("consumer-groups", ["--reset-offsets", "--group", "g"], "--command-config", "admin"),
    ("get-offsets", ["--topic", "x"], "--command-config", "reader"),
])
def test_secured_mode_passes_the_principals_client_config(tmp_path: Path, name: str, args: list[str], option: str,
                                                          principal: str) -> None:
    settings = _settings(tmp_path, "scram")
    store = local_credentials(settings, create=True)
    expected = principal if principal == "admin" else (VIEWER if VIEWER in store else "admin")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    cmd = tool_command(settings, name, args, config_dir=private)
    config = Path(_option(cmd, option))
    assert config == private / f"client-{expected}.properties"
    assert not list((tmp_path / "var" / "kafka").glob("client-*"))  # no password file left in var/kafka
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n" in text
    assert f'username="{expected}" password="{store[expected]}";' in text
    assert store[expected] not in " ".join(cmd)  # the password is in the 0600 file, never on the command line


def test_secured_console_consumer_gets_its_own_group_unless_one_is_given(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "scram")
    local_credentials(settings, create=True)
    cmd = tool_command(settings, "console-consumer", ["--topic", "x"], principal="admin", config_dir=tmp_path)
    assert _option(cmd, "--group").startswith("t1-admin-console-")
    assert _option(cmd, "--consumer-property") == "enable.auto.commit=false"
    assert tool_command(settings, "console-consumer", ["--topic", "x", "--group", "mine"],
                        config_dir=tmp_path).count("--group") == 1


def test_an_explicit_principal_must_be_in_the_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "scram")
    local_credentials(settings, create=True)
    with pytest.raises(ConfigError, match="no SCRAM credentials for 'nobody'"):
        tool_command(settings, "topics", ["--list"], principal="nobody", config_dir=tmp_path)


def test_an_unknown_tool_exits_2_listing_the_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kafka", "tool", "console-consumr", "--topic", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown tool 'console-consumr'" in err
    assert all(name in err for name in ("console-producer", "console-consumer", "consumer-groups", "topics",
                                        "get-offsets"))
    with pytest.raises(ConfigError, match="known: console-producer"):
        tool_command(load_settings(), "nope", [])


# Review findings ---------------------------------------------------------------------------------------------


def test_a_username_without_password_is_a_config_error_naming_the_password(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var", bootstrap_servers="127.0.0.1:19092", security="scram",
                             kafka_username="svc")
    with pytest.raises(ConfigError, match="MBYN_KAFKA_PASSWORD"):
        tool_command(settings, "topics", ["--list"], config_dir=tmp_path)


def test_credentials_from_the_environment_are_used_as_given(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var", bootstrap_servers="127.0.0.1:19092", security="scram",
                             kafka_username="svc", kafka_password=SecretStr("env-given"))
    cmd = tool_command(settings, "topics", ["--list"], config_dir=tmp_path)
    jaas = Path(_option(cmd, "--command-config")).read_text()
    assert 'username="svc"' in jaas and '"env-given";' in jaas


@pytest.mark.parametrize("password", ["a\rsasl.mechanism=PLAIN", "tab\there", "nul\x00", "caf\u00e9", "x\u2028y",
                                      "del\x7f", 'quo"te', "back\\slash", "new\nline"])
def test_client_properties_refuses_what_a_properties_file_cannot_carry(password: str) -> None:
    with pytest.raises(ConfigError, match="only printable ASCII") as caught:
        client_properties("svc", password)
    assert password not in str(caught.value)  # the password is not echoed
    with pytest.raises(ConfigError, match="user name"):
        client_properties("sv\rc", "fine")


def test_client_properties_takes_printable_ascii() -> None:
    password = "".join(chr(c) for c in range(0x20, 0x7f) if chr(c) not in '"\\')
    assert f'password="{password}";\n' in client_properties("svc", password)


def test_secured_mode_needs_a_private_config_dir(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "scram")
    local_credentials(settings, create=True)
    with pytest.raises(ValueError, match="config_dir"):
        tool_command(settings, "topics", ["--list"])


def test_run_tool_deletes_the_client_config_when_the_tool_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    settings = load_settings(var_dir=tmp_path / "var", bootstrap_servers="127.0.0.1:19092", security="scram",
                             kafka_username="svc", kafka_password=SecretStr("from-the-env"))
    seen: dict[str, Any] = {}

    class FakeProc:
        def __init__(self, cmd: list[str]) -> None:
            config = Path(_option(cmd, "--command-config"))
            seen["config"] = config
            seen["modes"] = (stat.S_IMODE(config.parent.stat().st_mode), stat.S_IMODE(config.stat().st_mode))
            seen["text"] = config.read_text()

        def wait(self) -> int:
            if seen.get("interrupt"):
                raise KeyboardInterrupt
            return 7

    monkeypatch.setattr(kafka_tools.cluster, "ensure_jars", lambda settings: None)
    monkeypatch.setattr(subprocess, "Popen", FakeProc)
    assert run_tool(settings, "topics", ["--list"]) == 7
    assert seen["modes"] == (0o700, 0o600) and "from-the-env" in seen["text"]
    assert not seen["config"].exists() and not seen["config"].parent.exists()
    assert not (tmp_path / "var" / "kafka").exists() or not list((tmp_path / "var" / "kafka").glob("client-*"))
    seen["interrupt"] = True
    with pytest.raises(KeyboardInterrupt):
        run_tool(settings, "topics", ["--list"])
    assert not seen["config"].parent.exists()
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


def test_an_own_bootstrap_server_gets_no_local_security_unless_explicit(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MBYN_SECURITY", raising=False)
    implicit = load_settings(var_dir=tmp_path / "var", bootstrap_servers="127.0.0.1:19092")
    running = type("Running", (), {"security": "scram"})()
    monkeypatch.setattr(kafka_tools.cluster, "running_state", lambda settings: running)
    local_credentials(implicit.model_copy(update={"security": "scram"}), create=True)
    # the local cluster (secured) is running: its config is added for it ...
    assert "--command-config" in tool_command(implicit, "topics", ["--list"], config_dir=tmp_path)
    # ... but not for a cluster the user names
    for args in (["--bootstrap-server", "other:9092", "--list"], ["--bootstrap-controller=other:9093", "describe"]):
        name = "topics" if "--list" in args else "metadata-quorum"
        cmd = tool_command(implicit, name, args, config_dir=tmp_path)
        assert "--command-config" not in cmd and "127.0.0.1:19092" not in cmd
    explicit = _settings(tmp_path, "scram")
    assert "--command-config" in tool_command(explicit, "topics", ["--bootstrap-server", "other:9092", "--list"],
                                              config_dir=tmp_path)


def test_the_viewer_default_falls_back_to_admin_when_the_store_has_no_viewer(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "scram")
    store = local_credentials(settings, create=True)
    del store[VIEWER]  # a store written before the viewer principal existed
    credentials_file(settings).write_text(json.dumps(store))
    cmd = tool_command(settings, "topics", ["--list"], config_dir=tmp_path)
    assert Path(_option(cmd, "--command-config")).name == "client-admin.properties"


def test_a_principal_missing_from_the_store_names_topics_apply(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "scram")
    store = local_credentials(settings, create=True)
    del store[VIEWER]
    credentials_file(settings).write_text(json.dumps(store))
    with pytest.raises(ConfigError, match="`mbyn topics apply` adds the users of new services") as caught:
        tool_command(settings, "topics", ["--list"], principal=VIEWER, config_dir=tmp_path)
    assert "`mbyn kafka up --security scram` adds new services" not in str(caught.value)


def test_ensure_local_users_adds_new_principals_to_the_store_and_the_cluster(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, "scram")
    store = local_credentials(settings, create=True)
    del store[VIEWER]
    credentials_file(settings).write_text(json.dumps(store))
    calls: list[tuple[Settings, dict[str, str]]] = []

    def ensure_users(admin: Settings, creds: dict[str, str]) -> list[str]:
        calls.append((admin, creds))
        return [VIEWER]

    monkeypatch.setattr(security, "ensure_users", ensure_users)
    assert ensure_local_users(security.as_principal(settings)) == [VIEWER]
    (admin, creds), = calls
    assert admin.kafka_username == ADMIN and VIEWER in creds and VIEWER in local_credentials(settings)
    assert stat.S_IMODE(os.stat(credentials_file(settings)).st_mode) == 0o600
    # open mode, no local store, or another user / cluster from the environment: nothing
    calls.clear()
    assert ensure_local_users(_settings(tmp_path)) == []
    assert ensure_local_users(_settings(tmp_path / "elsewhere", "scram")) == []
    other = settings.model_copy(update={"kafka_username": ADMIN, "kafka_password": SecretStr("not-the-local-one")})
    assert ensure_local_users(other) == []
    assert calls == []


def test_topics_apply_creates_missing_users_before_the_acls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def ensure_local_users(settings: Settings) -> list[str]:
        order.append("users")
        return [VIEWER]

    def apply_topics(settings: Settings, names: list[str] | None = None) -> list[object]:
        order.append("topics")
        return []

    monkeypatch.setattr(topics, "ensure_local_users", ensure_local_users)
    monkeypatch.setattr(topics, "apply_topics", apply_topics)
    args = type("Args", (), {"topic": []})()
    assert topics._apply(_settings(tmp_path), args) == 0  # type: ignore[arg-type]
    assert order == ["users", "topics"]
