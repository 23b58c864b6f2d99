"""Shared fixtures: one real Kafka broker per test session, a unique topic prefix per test.

Set ``MBYN_TEST_BOOTSTRAP=host:port`` to run against an already running cluster instead of starting one.
The broker started here lives in a temporary folder on free ports and reuses the project's resolved
Kafka jars (``var/kafka/lib``), so it never touches the developer's own ``var/``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mbyn.settings import PROJECT_ROOT, Settings, get_settings, load_settings

pytest_plugins = ["tests.plugins.postgres", "tests.plugins.airflow"]


def free_port_block(size: int) -> int:
    """A base port such that ``base .. base+size-1`` are all free now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size >= 65000:
            continue
        ok = True
        for port in range(base, base + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports found")


def _reset_settings() -> None:
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def test_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mbyn")


@pytest.fixture(scope="session")
def kafka_bootstrap(test_root: Path) -> Iterator[str]:
    """Bootstrap servers of a real single-node Kafka broker for the whole test session."""
    external = os.environ.get("MBYN_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    from mbyn.local import kafka as cluster

    settings = load_settings(var_dir=test_root / "broker", kafka_port=free_port_block(1),
                             kafka_controller_port=free_port_block(1), kafka_nodes=1, kafka_heap="512m",
                             kafka_lib_dir=PROJECT_ROOT / "var" / "kafka" / "lib")
    state = cluster.up(settings, die_with_parent=True)
    try:
        yield state.bootstrap_servers
    finally:
        cluster.down(settings)


@pytest.fixture
def mbyn_env(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for one test: the session broker, a fresh topic prefix and a fresh var/ folder.

    Exported as MBYN_* environment variables too, so subprocesses (`mbyn ...`) see the same world.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    monkeypatch.setenv("MBYN_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MBYN_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("MBYN_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MBYN_WAREHOUSE_URL", raising=False)
    _reset_settings()
    yield get_settings()
    _reset_settings()


@pytest.fixture
def topics(mbyn_env: Settings) -> Settings:
    """``mbyn_env`` with every catalog topic created under the test's prefix."""
    from mbyn.kafka.admin import apply_topics

    apply_topics(mbyn_env)
    return mbyn_env
