"""A project-started PostgreSQL server for the warehouse: ``mbyn postgres up|down|status|url``.

Used by the test fixtures (``tests/plugins/postgres.py``) and by ``make run --warehouse postgres``. It runs
the PostgreSQL server binaries that are already installed (Debian package ``postgresql``; the newest
``/usr/lib/postgresql/<major>/bin``, else ``pg_ctl`` on PATH) — no Docker, no system cluster.

Layout under ``<var>/postgres/``, owned by the OS user the server runs as::

    data/           the cluster made by initdb; also its unix socket and postmaster.pid
    data/mbyn.conf  listen address, port and socket folder (rewritten on every start)
    postgres.log    the server log
    password        the superuser ``mbyn``'s password (readable by the caller only, like the two below)
    password-mbyn_loader, password-mbyn_reader   the passwords of the two roles of daily work

Who runs the server: PostgreSQL refuses to run as root, and on the build machines everything runs as root.
As root, ``initdb`` and ``pg_ctl`` run as the ``postgres`` OS user (``runuser -u postgres --``), the
folder is chowned to it, and every parent folder it cannot enter gets the search bit for others
(``o+x``: enter, not list) — the server needs to reach its data folder at start. The alternative, a data
folder outside ``var/``, would survive ``make clean`` and mix state of different checkouts; granting the
search bit is the smaller change and is logged folder by folder. As any other user the server simply
runs as that user.

Access: the server listens on 127.0.0.1 only, on ``MBYN_POSTGRES_PORT`` (default 5433, clear of a
system PostgreSQL on 5432). TCP clients authenticate with a password (scram-sha-256) generated at
initdb; the unix socket inside the 0700 data folder is trusted, because only the server's OS user (and
root) can reach it. The database is ``mbyn``.

Roles (``ensure_roles``, at every ``up``): the superuser ``mbyn`` only sets the server up (initdb, databases,
roles). Daily work never uses it: ``up`` returns the URL of ``mbyn_loader``, which owns the warehouse tables
(creates and migrates them, writes rows: the workers, Airflow, `mbyn run`), and ``mbyn_reader`` may only
SELECT (``default_transaction_read_only`` on, no CREATE anywhere, no TEMP in ``mbyn``, no large objects):
``mbyn sql``, ``mbyn status`` and the pipeline view read as it (``mbyn.warehouse.roles``). PUBLIC loses every
right on database ``mbyn``, CREATE on its schema ``public`` and the functions creating large objects; tables
an older version made as the superuser are handed to the loader. Passwords are random, one 0600 file each, and
reach the server as SCRAM verifiers computed here (libpq's ``PQencryptPasswordConn``), so not even the server
log could show one. One ``ensure_roles`` at a time (an advisory lock): two `up` at once agree on the passwords.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mbyn.errors import PortInUseError, PostgresError, PostgresNotInstalledError
from mbyn.files import atomic_write
from mbyn.local.processes import port_open, progress_printer
from mbyn.settings import (
    POSTGRES_DATABASE,
    POSTGRES_LOADER,
    POSTGRES_READER,
    POSTGRES_SUPERUSER,
    Settings,
    postgres_password_name,
)

SERVER_OS_USER = "postgres"
SUPERUSER = POSTGRES_SUPERUSER
LOADER = POSTGRES_LOADER
READER = POSTGRES_READER
ROLES = (SUPERUSER, LOADER, READER)
DATABASE = POSTGRES_DATABASE
DEBIAN_BIN_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
#: Linux limits a unix socket path to 107 bytes; longer socket folders are left out (TCP only).
MAX_SOCKET_PATH = 107
CONF_NAME = "mbyn.conf"
#: pg_advisory_lock key serialising ``ensure_roles`` (any number unique on this server).
ROLES_LOCK = 73858


log = progress_printer("postgres")


@dataclass(frozen=True)
class LocalPostgres:
    """Where one project-started server keeps its files, and the port it listens on."""

    home: Path
    port: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalPostgres:
        return cls(home=settings.var_dir / "postgres", port=settings.postgres_port)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.password_path(SUPERUSER)

    def password_path(self, role: str) -> Path:
        """The 0600 file holding ``role``'s password."""
        return self.home / postgres_password_name(role)

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def url(self, database: str = DATABASE, role: str = SUPERUSER) -> str:
        """The SQLAlchemy URL of ``database`` on this server as ``role``
        (``postgresql+psycopg://<role>:…@127.0.0.1:PORT/db``); the superuser's by default (setup)."""
        if role not in ROLES:
            raise PostgresError(f"no role {role!r} on the local PostgreSQL; its roles are {', '.join(ROLES)}")
        try:
            password = self.password_path(role).read_text().strip()
        except FileNotFoundError:
            raise PostgresError(f"the local PostgreSQL in {self.home} has no {role} yet; "
                                "run `mbyn postgres up`") from None
        return f"postgresql+psycopg://{role}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"


# Binaries and OS user ---------------------------------------------------------------------------------


def _major(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def find_bin_dir(major: str | None = None) -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest Debian major (or ``major``), else PATH."""
    found = sorted((p.parent for p in DEBIAN_BIN_ROOT.glob("*/bin/pg_ctl")), key=lambda b: _major(b.parent.name))
    if major is not None:
        matching = [b for b in found if b.parent.name == major]
        if matching:
            return matching[-1]
        if found:
            raise PostgresError(f"the data folder was made by PostgreSQL {major}, but only "
                                f"{', '.join(b.parent.name for b in found)} is installed; install the Debian package "
                                f"`postgresql-{major}`, or delete the data folder to start afresh")
    if found:
        return found[-1]
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "initdb").exists():
        return Path(on_path).parent
    raise PostgresNotInstalledError(
        f"PostgreSQL server binaries not found (no {DEBIAN_BIN_ROOT}/*/bin/pg_ctl, no pg_ctl+initdb on PATH); "
        "install the Debian package `postgresql` (apt-get install postgresql) or run `make system-deps`")


def _server_user() -> pwd.struct_passwd | None:
    """The OS user to run the server as when we are root; None when we run it as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresNotInstalledError(
            f"running as root, but there is no `{SERVER_OS_USER}` OS user to run PostgreSQL as (it refuses root); "
            "install the Debian package `postgresql`, which creates it") from None


def _command(user: pwd.struct_passwd | None, *argv: str | Path) -> list[str]:
    cmd = [str(a) for a in argv]
    if user is None:
        return cmd
    return ["runuser", "-u", user.pw_name, "--", *cmd]


def _run(user: pwd.struct_passwd | None, cwd: Path, *argv: str | Path,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one server tool (as the server's OS user); ``cwd`` must be a folder that user can enter."""
    return subprocess.run(_command(user, *argv), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)


def _give(user: pwd.struct_passwd | None, path: Path) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def grant_traversal(path: Path, user: pwd.struct_passwd) -> list[Path]:
    """Make sure ``user`` may enter every parent folder of ``path``; return the folders changed.

    Adds only the search bit for others (``o+x``) and only where the user has no search permission at all
    (as owner, through a group, or as other). Needs root, which is the only case it is called in.
    """
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    changed = []
    for folder in reversed(path.parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            os.chmod(folder, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            log(f"granted the `{user.pw_name}` OS user search permission (o+x) on {folder} so the server can reach "
                "its data folder")
            changed.append(folder)
    return changed


# Initialisation ---------------------------------------------------------------------------------------


def _prepare_home(pg: LocalPostgres, user: pwd.struct_passwd | None) -> None:
    pg.home.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _give(user, pg.home)
        os.chmod(pg.home, 0o700)
        grant_traversal(pg.home, user)


def initdb(pg: LocalPostgres, user: pwd.struct_passwd | None) -> None:
    """Create the cluster with superuser ``mbyn`` and a fresh random password (first start only).

    A half-made data folder (no PG_VERSION, e.g. after an interrupted initdb) is removed and made again.
    """
    bin_dir = find_bin_dir()
    if pg.data_dir.exists():
        log(f"removing the incomplete data folder {pg.data_dir}")
        shutil.rmtree(pg.data_dir)
    password = secrets.token_urlsafe(24)
    old_umask = os.umask(0o077)
    try:
        pg.password_file.write_text(password + "\n")
        # initdb reads the password as the server's OS user; this copy lives only while it runs.
        pwfile = pg.home / ".initdb-password"
        pwfile.write_text(password + "\n")
    finally:
        os.umask(old_umask)
    _give(user, pwfile)
    log(f"initialising a PostgreSQL {bin_dir.parent.name} cluster in {pg.data_dir} (first start only)")
    try:
        result = _run(user, pg.home, bin_dir / "initdb", "-D", pg.data_dir, "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale")
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        pg.password_file.unlink(missing_ok=True)
        raise PostgresError(f"initdb failed (exit {result.returncode}):\n"
                            f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    with (pg.data_dir / "postgresql.conf").open("a") as conf:
        conf.write(f"\n# Written by mbyn: listen address, port and socket folder.\ninclude_if_exists = '{CONF_NAME}'\n")


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write_conf(pg: LocalPostgres, user: pwd.struct_passwd | None) -> None:
    """(Re)write ``mbyn.conf``: loopback only, the configured port, the socket in the data folder."""
    socket_dir = str(pg.data_dir)
    if len(f"{socket_dir}/.s.PGSQL.{pg.port}") > MAX_SOCKET_PATH:
        log(f"{socket_dir} is too long for a unix socket path; the server listens on TCP only")
        socket_dir = ""
    text = (
        "# Managed by `mbyn postgres up`; rewritten on every start.\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {pg.port}\n"
        f"unix_socket_directories = {_quote_conf(socket_dir)}\n"
        "logging_collector = off\n"
    )
    path = pg.data_dir / CONF_NAME
    path.write_text(text)
    _give(user, path)


# Lifecycle --------------------------------------------------------------------------------------------


def running_pid_port(pg: LocalPostgres) -> tuple[int, int] | None:
    """(pid, port) of the server running on this data folder, from ``postmaster.pid``; None if not running."""
    try:
        lines = (pg.data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid, port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _admin_connection(pg: LocalPostgres, connect_timeout: int, dbname: str = "postgres") -> Any:
    """An autocommit connection to ``dbname`` as the superuser, over 127.0.0.1 with the 0600 password."""
    import psycopg  # noqa: PLC0415 - only with a local server (65 ms); every CLI command imports this module

    password = pg.password_file.read_text().strip()
    return psycopg.connect(host="127.0.0.1", port=pg.port, user=SUPERUSER, password=password, dbname=dbname,
                           autocommit=True, connect_timeout=connect_timeout)


def wait_accepting(pg: LocalPostgres, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until the server accepts an authenticated TCP connection (pg_ctl's wait only reads the pid file)."""
    import psycopg  # noqa: PLC0415 - as in _admin_connection

    deadline = time.monotonic() + timeout
    while True:
        try:
            with _admin_connection(pg, connect_timeout=3):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL on 127.0.0.1:{pg.port} does not accept connections after "
                                    f"{timeout:.0f}s ({exc}); see {pg.log_file}") from exc
            time.sleep(0.25)


def ensure_database(pg: LocalPostgres, name: str = DATABASE) -> bool:
    """Create database ``name`` unless it exists; True if it was created."""
    from psycopg import sql  # noqa: PLC0415 - as in _admin_connection

    with _admin_connection(pg, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log(f"created database {name}")
    return True


def _role_password(pg: LocalPostgres, role: str) -> str:
    """``role``'s password from its 0600 file; a random one is made the first time."""
    path = pg.password_path(role)
    if not path.exists():
        atomic_write(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    return path.read_text().strip()


def ensure_roles(pg: LocalPostgres) -> None:
    """Create (or re-key from their files) the loader and the reader and give them their rights on database
    ``mbyn`` — and nothing to PUBLIC; idempotent (see the module docstring).

    One caller at a time (a session advisory lock, released when its connection closes): two `up` at once (two
    `mbyn run`) would both CREATE ROLE (one fails), or both write a password file and re-key the role with
    different passwords, leaving a file the server does not accept.
    """
    with _admin_connection(pg, connect_timeout=10) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (ROLES_LOCK,))
        _ensure_roles(pg)


def _ensure_roles(pg: LocalPostgres) -> None:
    from psycopg import sql  # noqa: PLC0415 - as in _admin_connection

    loader, reader, database = sql.Identifier(LOADER), sql.Identifier(READER), sql.Identifier(DATABASE)
    with _admin_connection(pg, connect_timeout=10) as conn:
        for role in (LOADER, READER):
            verifier = conn.pgconn.encrypt_password(_role_password(pg, role).encode(), role.encode(),
                                                    b"scram-sha-256").decode()
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}")
                         .format(sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(role),
                                 sql.Literal(verifier)))
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(reader))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, loader))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, reader))
    with _admin_connection(pg, connect_timeout=10, dbname=DATABASE) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        # PUBLIC may create large objects by default: rows in this database even the reader could write
        conn.execute("REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) "
                     "FROM PUBLIC")
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(loader))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(reader))
        kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}  # a table's sequences follow it
        owned = conn.execute("SELECT c.relname, c.relkind FROM pg_class c "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                             "AND c.relkind IN ('r', 'p', 'v', 'm') AND pg_get_userbyid(c.relowner) = %s",
                             (SUPERUSER,)).fetchall()
        for name, kind in owned:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kinds[kind]), sql.Identifier("public", name),
                                                                  loader))
        if owned:
            log(f"handed {len(owned)} table(s) made by the superuser to {LOADER}")
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(reader))
        # ... and the superuser's too: a warehouse URL kept from before the roles still names it
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}, {} IN SCHEMA public GRANT SELECT ON TABLES TO {}")
                     .format(loader, sql.Identifier(SUPERUSER), reader))


def up(settings: Settings, timeout: float = START_TIMEOUT_S) -> str:
    """Start the server (initdb on first use), create database ``mbyn`` and the roles, return the SQLAlchemy URL
    of daily work: database ``mbyn`` as the loader (``LocalPostgres.url`` gives the others).

    Idempotent: when this data folder's server is already running on the configured port it only makes
    sure the database exists. Raises PostgresNotInstalledError without the binaries, PortInUseError when
    another program holds ``MBYN_POSTGRES_PORT``, PostgresError otherwise (with the log's last lines).
    """
    pg = LocalPostgres.from_settings(settings)
    running = running_pid_port(pg)
    if running is not None:
        pid, port = running
        if port != pg.port:
            raise PostgresError(f"the local PostgreSQL (pid {pid}) is running on port {port}, but MBYN_POSTGRES_PORT "
                                f"is {pg.port}; run `mbyn postgres down` first")
        wait_accepting(pg, timeout)
        ensure_database(pg)
        ensure_roles(pg)
        log(f"already running (pid {pid}) on 127.0.0.1:{port}")
        return pg.url(role=LOADER)
    if port_open(pg.port):
        raise PortInUseError(f"port {pg.port} on 127.0.0.1 is in use by another program; set MBYN_POSTGRES_PORT "
                             "to a free port (1024..65000)")
    user = _server_user()
    _prepare_home(pg, user)
    if not pg.initialised:
        initdb(pg, user)
    elif not pg.password_file.exists():
        raise PostgresError(f"{pg.password_file} is missing, so nothing can log in to the cluster in {pg.data_dir}; "
                            "restore the file, or delete the data folder to start afresh (its data is lost)")
    bin_dir = find_bin_dir((pg.data_dir / "PG_VERSION").read_text().strip())
    write_conf(pg, user)
    log(f"starting PostgreSQL {bin_dir.parent.name} on 127.0.0.1:{pg.port}, log in {pg.log_file}")
    result = _run(user, pg.home, bin_dir / "pg_ctl", "start", "-D", pg.data_dir, "-l", pg.log_file,
                  "-w", "-t", str(int(timeout)), timeout=timeout + 10)
    if result.returncode != 0:
        raise PostgresError(f"pg_ctl start failed (exit {result.returncode}): {result.stderr.strip()}\n"
                            f"last lines of {pg.log_file}:\n{_tail(pg.log_file)}")
    wait_accepting(pg, timeout)
    ensure_database(pg)
    ensure_roles(pg)
    log(f"ready: database {DATABASE} on 127.0.0.1:{pg.port} (daily work as {LOADER}, reads as {READER})")
    return pg.url(role=LOADER)


def down(settings: Settings, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the server with ``pg_ctl stop -m fast`` (rolls back open transactions); False if none was running."""
    pg = LocalPostgres.from_settings(settings)
    running = running_pid_port(pg)
    if running is None:
        return False
    user = _server_user()
    bin_dir = find_bin_dir((pg.data_dir / "PG_VERSION").read_text().strip())
    log(f"stopping PostgreSQL (pid {running[0]}) ...")
    result = _run(user, pg.home, bin_dir / "pg_ctl", "stop", "-D", pg.data_dir, "-m", "fast", "-w",
                  "-t", str(int(timeout)), timeout=timeout + 10)
    if result.returncode != 0:
        raise PostgresError(f"pg_ctl stop failed (exit {result.returncode}): {result.stderr.strip()}")
    log("stopped")
    return True


def status(settings: Settings) -> dict[str, Any]:
    """Whether this data folder's server runs, with pid, port, data folder and log file."""
    pg = LocalPostgres.from_settings(settings)
    running = running_pid_port(pg)
    return {
        "running": running is not None,
        "pid": running[0] if running else None,
        "port": running[1] if running else pg.port,
        "accepting": running is not None and port_open(running[1]),
        "initialised": pg.initialised,
        "data_dir": str(pg.data_dir),
        "log_file": str(pg.log_file),
    }

