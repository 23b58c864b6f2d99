"""No password on screen: URLs are shown with the password masked, and the `mbyn run` banner says where to get
the passwords (`mbyn airflow password`, `mbyn postgres url`) instead of printing them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbyn.local import airflow as local_airflow
from mbyn.local.run import _banner
from mbyn.settings import hide_password, load_settings


def test_hide_password_masks_only_the_password() -> None:
    encoded = "postgresql+psycopg://mbyn:s%40cr3t@127.0.0.1:5433/mbyn"  # pragma: allowlist secret
    assert hide_password(encoded) == "postgresql+psycopg://mbyn:***@127.0.0.1:5433/mbyn"
    assert hide_password("postgresql://u:p@w@h:1/d?sslmode=disable") == "postgresql://u:***@h:1/d?sslmode=disable"
    for unchanged in ("sqlite:////tmp/var/warehouse.db", "http://127.0.0.1:8080", "postgresql://u@h/d", "no url"):
        assert hide_password(unchanged) == unchanged


@pytest.mark.parametrize("password", ["a/b", "a#b", "a?b", "a[b", "p@w/x@y", "x]:@[y", "a%2Fb", "s@c?r#t/[x"])
def test_hide_password_masks_passwords_with_url_delimiters(password: str) -> None:
    for url in (f"postgresql+psycopg://mbyn:{password}@127.0.0.1:5433/mbyn",
                f"postgresql://u:{password}@h:notaport/d", f"mysql://u:{password}@[::1]/d?charset=utf8"):
        shown = hide_password(url)
        assert password not in shown and "***" in shown, (url, shown)
        assert shown.endswith(url.rpartition("@")[2]), shown


def test_hide_password_masks_a_password_query_parameter_and_anything_before_an_at() -> None:
    assert hide_password("postgresql://h/d?user=u&password=Qp-9x&sslmode=require") == \
        "postgresql://h/d?user=u&password=***&sslmode=require"
    assert "Qp-9x" not in hide_password("postgresql://h/d?PASSWORD=Qp-9x")
    assert (hide_password("user:Qp-9x@host"), hide_password("Qp-9x@host")) == ("user:***@host", "***@host")


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
