"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, a free loopback port, pg_ctl start.

PostgreSQL refuses to run as root, so as root the server's programs run as the `postgres` user (runuser),
owning the temp dir; as anyone else they run directly. Each test gets its own schema (search_path in the
connection string), so tests never see each other's rows and no database has to be created per test.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

USER = "earshot"


def server_bin() -> Path:
    """The newest installed server's programs (Debian: /usr/lib/postgresql/N/bin), else those on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: run bin/setup as root, "
                       "or install the 'postgresql' package")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        self.bin = server_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="earshot-pg-"))
        self.data = self.dir / "data"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:                 # the server won't run as root: hand it to the postgres user
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / program), *args], check=True, cwd=self.dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self._as:
            account = pwd.getpwnam("postgres")
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        for attempt in range(5):              # another process may take the port between finding and binding
            self.port = _free_port()
            options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w",
                          "-t", "60", "start")
                break
            except subprocess.CalledProcessError:
                if attempt == 4:
                    raise
        self.admin("CREATE DATABASE earshot")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "earshot", schema: str | None = None) -> str:
        base = f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"
        return base + (f"?options=-csearch_path%3D{schema}" if schema else "")

    def admin(self, sql: str, database: str = "postgres") -> None:
        import psycopg
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)   # type: ignore[arg-type]

    def fresh(self) -> str:
        """A connection string to a new, empty schema of the cluster's database."""
        schema = f"t{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE SCHEMA {schema}", "earshot")
        return self.url(schema=schema)


def rows(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows as another process sees them (committed only), as dicts; [] when the table isn't there yet."""
    import psycopg
    from psycopg.rows import dict_row
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        try:
            return list(conn.execute(sql.replace("?", "%s"), args or None))   # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            return []
