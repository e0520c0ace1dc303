"""A throw-away PostgreSQL server for tests: Debian's `postgresql` (installed where missing, tests/_system.py),
a data directory in a new temporary folder, 127.0.0.1 on a free port, trust authentication, stopped and removed
afterwards. PostgreSQL refuses to run as root: as root the server runs as the `postgres` user (`runuser`), which
owns the temporary folder."""

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

from tests._system import ensure_program

USER = "dagster"
DB = "dagster"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_ctl() -> str:
    candidates = tuple(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True))
    path = ensure_program("pg_ctl", "postgresql", candidates=candidates)
    if not candidates:  # installed just now: prefer the versioned bin folder (initdb is only there)
        candidates = tuple(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True))
        path = candidates[0] if candidates else path
    return str(Path(path).resolve())


@dataclass
class PostgresServer:
    port: int
    base: Path
    bindir: Path
    runas: list[str]

    host = "127.0.0.1"
    user = USER
    db = DB

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.db}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.runas, *args], capture_output=True, text=True, check=check, timeout=120)

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'create database "{name}"')
        conn.close()
        return name

    def stop(self) -> None:
        self.run(str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bindir = Path(_pg_ctl()).parent
    if not (bindir / "initdb").exists():
        raise RuntimeError(f"initdb not found next to {bindir / 'pg_ctl'}")
    base = Path(tempfile.mkdtemp(prefix="regime_assets-pg-", dir="/tmp"))
    runas: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")  # created by the Debian package
        os.chown(base, pw.pw_uid, pw.pw_gid)
        runas = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    server = PostgresServer(port=port, base=base, bindir=bindir, runas=runas)
    try:
        server.run(str(bindir / "initdb"), "-D", str(base / "data"), "-U", USER, "-A", "trust", "-E", "UTF8",
                   "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=100 "
                "-c shared_buffers=32MB")
        server.run(str(bindir / "pg_ctl"), "-D", str(base / "data"), "-o", opts, "-l", str(base / "log"), "-w",
                   "-t", "60", "start")
        import psycopg2

        deadline = time.time() + 30
        while True:
            try:
                conn = psycopg2.connect(host=server.host, port=port, user=USER, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'create database "{DB}"')
        conn.close()
    except BaseException as err:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        server.stop()
        if isinstance(err, subprocess.CalledProcessError):
            raise RuntimeError(f"postgres did not start: {err.stderr or err.stdout} {log[-2000:]}") from err
        raise
    return server
