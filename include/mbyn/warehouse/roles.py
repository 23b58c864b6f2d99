"""Which database role reads the warehouse: read-only work never connects as a role that may write.

``read_url(settings)`` is the URL of ``mbyn sql``, ``mbyn status`` and the pipeline view
(``warehouse_engine(settings, read_only=True)``): ``MBYN_WAREHOUSE_READ_URL`` when set; else, when the
warehouse is the project-started PostgreSQL's database ``mbyn`` (127.0.0.1/localhost at
``MBYN_POSTGRES_PORT``, as its loader or superuser) and that server's reader password file exists, the same
URL as ``mbyn_reader`` — a role with SELECT only, whatever the statement asks for (made by
``mbyn.local.postgres``); else the warehouse URL itself, where the read-only transaction is the only guard
(SQLite's ``query_only``, PostgreSQL's ``SET TRANSACTION READ ONLY``).
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mbyn.settings import (
    POSTGRES_DATABASE,
    POSTGRES_LOADER,
    POSTGRES_READER,
    POSTGRES_SUPERUSER,
    Settings,
)

_LOCAL_HOSTS = ("127.0.0.1", "localhost")


def read_url(settings: Settings) -> str:
    """The URL read-only work connects with (see the module docstring)."""
    if settings.warehouse_read_url:
        return settings.warehouse_read_url
    url = settings.warehouse()
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # make_engine reports the bad URL
    local = (parsed.get_backend_name() == "postgresql" and parsed.host in _LOCAL_HOSTS
             and parsed.port == settings.postgres_port and parsed.database == POSTGRES_DATABASE
             and parsed.username in (POSTGRES_LOADER, POSTGRES_SUPERUSER))
    if not local:
        return url
    try:
        password = settings.local_postgres_password_file(POSTGRES_READER).read_text().strip()
    except OSError:
        return url  # a server made before the roles existed: `mbyn postgres up` adds them
    return parsed.set(username=POSTGRES_READER, password=password).render_as_string(hide_password=False)
