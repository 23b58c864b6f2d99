"""The pipeline view's app in a ``TestClient``, past Airflow's login.

``login_required`` (Airflow's dependency) is answered for the routes under test; the login itself — 401 for
anonymous callers, 403 for a viewer's actions — is tested against a real ``airflow standalone`` in
tests/e2e/test_pipeline_view_browser.py, and the action routes' own permission checks are never overridden.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from mbyn.pipeline_view.app import create_app
from mbyn.settings import Settings, get_settings


@contextmanager
def view_client(settings_factory: Callable[[], Settings] = get_settings,
                raise_server_exceptions: bool = True) -> Iterator[TestClient]:
    """A client of a new view app reading its settings from ``settings_factory``, logged in."""
    app = create_app(settings_factory)
    app.dependency_overrides[app.state.login_required] = lambda: None
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client
