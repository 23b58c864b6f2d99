"""No password on screen: URLs are shown with the password masked, and the `mbyn run` banner says where to get
the passwords (`mbyn airflow password`, `mbyn postgres url`) instead of printing them."""

from __future__ import annotations

import json
from pathlib import Path

from mbyn.local import airflow as local_airflow
from mbyn.local.run import _banner
from mbyn.settings import hide_password, load_settings


def test_hide_password_masks_only_the_password() -> None:
    assert hide_password("postgresql+psycopg://mbyn:s%40cr3t@127.0.0.1:5433/mbyn") == \
        "postgresql+psycopg://mbyn:***@127.0.0.1:5433/mbyn"
    assert hide_password("postgresql://u:p@w@h:1/d?sslmode=disable") == "postgresql://u:***@h:1/d?sslmode=disable"
    for unchanged in ("sqlite:////tmp/var/warehouse.db", "http://127.0.0.1:8080", "postgresql://u@h/d", "no url"):
        assert hide_password(unchanged) == unchanged


def test_banner_shows_no_password_and_says_where_to_get_them(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var", airflow_password="Settings-Pw-1234")
    local_airflow.password_file(settings).parent.mkdir(parents=True, exist_ok=True)
    local_airflow.password_file(settings).write_text(json.dumps({"admin": "File-Pw-5678"}))
    banner = _banner(settings, "http://127.0.0.1:8080", "postgresql+psycopg://mbyn:Pg-Pw-9abc@127.0.0.1:5433/mbyn")
    for secret in ("Settings-Pw-1234", "File-Pw-5678", "Pg-Pw-9abc"):
        assert secret not in banner
    assert "postgresql+psycopg://mbyn:***@127.0.0.1:5433/mbyn" in banner
    assert "mbyn airflow password" in banner and "mbyn postgres url" in banner
    sqlite = _banner(settings, None, "sqlite:////tmp/var/warehouse.db")
    assert "sqlite:////tmp/var/warehouse.db" in sqlite and "mbyn postgres url" not in sqlite
