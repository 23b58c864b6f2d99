"""`mbyn kafka tool`: the command line each Kafka tool gets — bootstrap servers, and in the secured mode the
principal's client config file (0600) through the option that tool expects."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mbyn.cli.main import main
from mbyn.errors import ConfigError
from mbyn.kafka.security import VIEWER, local_credentials
from mbyn.local.kafka_tools import TOOLS, tool_command
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
    cmd = tool_command(settings, name, args)
    config = Path(_option(cmd, option))
    assert config == tmp_path / "var" / "kafka" / f"client-{expected}.properties"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n" in text
    assert f'username="{expected}" password="{store[expected]}";' in text
    assert store[expected] not in " ".join(cmd)  # the password is in the 0600 file, never on the command line


def test_secured_console_consumer_gets_its_own_group_unless_one_is_given(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "scram")
    local_credentials(settings, create=True)
    cmd = tool_command(settings, "console-consumer", ["--topic", "x"], principal="admin")
    assert _option(cmd, "--group").startswith("t1-admin-console-")
    assert _option(cmd, "--consumer-property") == "enable.auto.commit=false"
    assert tool_command(settings, "console-consumer", ["--topic", "x", "--group", "mine"]).count("--group") == 1


def test_an_explicit_principal_must_be_in_the_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "scram")
    local_credentials(settings, create=True)
    with pytest.raises(ConfigError, match="no SCRAM credentials for 'nobody'"):
        tool_command(settings, "topics", ["--list"], principal="nobody")


def test_an_unknown_tool_exits_2_listing_the_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kafka", "tool", "console-consumr", "--topic", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown tool 'console-consumr'" in err
    assert all(name in err for name in ("console-producer", "console-consumer", "consumer-groups", "topics",
                                        "get-offsets"))
    with pytest.raises(ConfigError, match="known: console-producer"):
        tool_command(load_settings(), "nope", [])
