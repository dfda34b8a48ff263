"""A real PostgreSQL server for the tests, on 127.0.0.1.

`.ci/run` starts one and exports its URL in `CHI_TEST_PG_URL`; without it, `postgres_url()`
starts a throwaway cluster itself (initdb + pg_ctl in a temporary folder, a free port,
trust authentication on loopback only). `initdb` refuses to run as root, so as root the
cluster is owned and run by the `postgres` user (Debian's package creates it).

Tests that need the server call the `pg_url` fixture (tests/conftest-style, see
`pg_fixture`); it skips with the reason only where no server can be had.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "CHI_TEST_PG_URL"


class NoPostgres(RuntimeError):
    """No server could be started; the message is the skip reason."""


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    folder: Path | None = None
    as_user: list[str] | None = None

    def stop(self) -> None:
        if self.folder is None:
            return
        pg_ctl = _bin("pg_ctl")
        if pg_ctl:
            subprocess.run([*(self.as_user or []), pg_ctl, "-D", str(self.folder / "db"), "stop", "-m", "immediate"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


def start_server() -> Server:
    """The server named by $CHI_TEST_PG_URL, else a new throwaway one. Raises NoPostgres."""
    if os.environ.get(ENV):
        return Server(os.environ[ENV])
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise NoPostgres(
            f"no PostgreSQL server: ${ENV} is not set and initdb/pg_ctl are not installed "
            f"(apt-get install postgresql, or point ${ENV} at a server)"
        )
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="chi-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise NoPostgres("running as root and there is no `postgres` user to run initdb as") from None
        runuser = shutil.which("runuser") or shutil.which("setpriv")
        if runuser is None:
            raise NoPostgres("running as root without runuser/setpriv to drop to the postgres user")
        as_user = ([runuser, "-u", "postgres", "--"] if runuser.endswith("runuser")
                   else [runuser, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"])
        os.chmod(folder, 0o755)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    db = folder / "db"
    run = lambda args, **kw: subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120, **kw)  # noqa: E731
    r = run([initdb, "-D", str(db), "-A", "trust", "-U", "chi", "-E", "UTF8", "--no-locale"])
    if r.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise NoPostgres(f"initdb failed: {r.stderr.strip()[-300:]}")
    r = run([pg_ctl, "-D", str(db), "-l", str(folder / "log"), "-w", "-t", "60", "start",
             "-o", f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c full_page_writes=off"])
    if r.returncode != 0:
        log = (folder / "log").read_text(errors="replace")[-300:] if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise NoPostgres(f"pg_ctl start failed: {r.stderr.strip()[-200:]} {log}")
    url = f"postgresql+psycopg://chi@127.0.0.1:{port}/postgres"
    server = Server(url, folder, as_user)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise NoPostgres("the PostgreSQL server started but does not accept connections") from None
            time.sleep(0.2)
    return server


def fresh_database(url: str, name: str) -> str:
    """Create (or re-create) database `name` on the server at `url`; its URL. Under
    pytest-xdist each worker gets its own database (the server may be shared)."""
    import sqlalchemy as sa

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        name = f"{name}_{worker}"

    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        eng.dispose()
    return str(sa.make_url(url).set(database=name).render_as_string(hide_password=False))


PG_TYPES = {
    "String": "text", "Float64": "double precision", "Float32": "real", "Int64": "bigint",
    "Int32": "integer", "Date": "date", "Datetime": "timestamp", "Boolean": "boolean",
}


def load_tables(url: str, tables: dict, *, rename: dict | None = None, schema: str | None = None) -> None:
    """Create each Polars frame as a table (COPY, fast) on the server at `url`.
    `rename[table]` maps a frame's column to the database's name; the table name itself
    may be changed with the key "__table__"."""
    import psycopg
    import sqlalchemy as sa

    u = sa.make_url(url)
    conninfo = u.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if schema:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for name, df in tables.items():
            mapping = dict((rename or {}).get(name, {}))
            table = mapping.pop("__table__", name)
            qualified = f'"{schema}"."{table}"' if schema else f'"{table}"'
            cols = [(mapping.get(c, c), PG_TYPES[type(df.schema[c]).__name__]) for c in df.columns]
            conn.execute(f"DROP TABLE IF EXISTS {qualified}")
            conn.execute(f"CREATE TABLE {qualified} ({', '.join(f'{chr(34)}{c}{chr(34)} {t}' for c, t in cols)})")
            names = ", ".join(f'"{c}"' for c, _ in cols)
            with conn.cursor() as cur, cur.copy(f"COPY {qualified} ({names}) FROM STDIN") as copy:
                for row in df.iter_rows():
                    copy.write_row(row)


def pg_fixture():
    """A session-scoped pytest fixture yielding a server URL (skips when none can be had)."""
    import pytest

    @pytest.fixture(scope="session")
    def pg_url():
        try:
            server = start_server()
        except NoPostgres as exc:
            pytest.skip(str(exc))
        try:
            yield server.url
        finally:
            server.stop()

    return pg_url
