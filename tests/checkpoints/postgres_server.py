"""A real, private PostgreSQL server for tests: initdb into a temporary directory, then
`pg_ctl start` on a free loopback port (and a unix socket in the same directory).

The binaries come from PyPI's `pgserver` wheel (its `pginstall/bin`, found without importing the
package, whose import-time setup we do not want), else from a system PostgreSQL. PostgreSQL
refuses to run as root, so under root the server runs as the unprivileged `nobody` (what
pgserver does with a user it adds; `nobody` already exists), with its directory owned by it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port

ROLE, PASSWORD, DATABASE = "agentd", "s3cret-pw", "agentd"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: Path

    def dsn(self, *, password: str = PASSWORD, database: str = DATABASE) -> str:
        """A connection string for the test role over TCP (password-checked)."""
        return f"postgresql://{ROLE}:{password}@{self.host}:{self.port}/{database}"

    @property
    def admin_dsn(self) -> str:
        """The superuser over the unix socket (trusted): for a test's own checks."""
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={DATABASE}"


def postgres_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres live: pgserver's wheel, else a system install."""
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bindir / "pg_ctl").exists():
            return bindir
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


@contextmanager
def postgres_server(bindir: Path) -> Iterator[PostgresServer]:
    """Start a server (about half a second), yield it, stop it and delete its files."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    else:
        uid, gid = os.getuid(), os.getgid()
    # /tmp, not pytest's tmp_path: under root, `nobody` cannot traverse pytest's 0700 folders
    base = Path(tempfile.mkdtemp(prefix="agentd-pg-"))
    os.chown(base, uid, gid)
    data = base / "data"
    port = free_port()

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bindir / argv[0]), *argv[1:]],
            user=uid,
            group=gid,
            cwd=base,
            capture_output=True,
            text=True,
        )

    try:
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256"]
        made = run("initdb", "-D", str(data), "-U", "postgres", "-E", "UTF8", *auth, "--no-sync")
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stderr}")
        options = f"-p {port} -h 127.0.0.1 -k {base} -c fsync=off -c max_connections=200"
        log = base / "log"
        started = run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-o", options, "start")
        if started.returncode != 0:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{text}")
        server = PostgresServer("127.0.0.1", port, base)
        _create_role(server)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _create_role(server: PostgresServer) -> None:
    import psycopg
    from psycopg import sql

    socket_admin = f"host={server.socket_dir} port={server.port} user=postgres dbname=postgres"
    with psycopg.connect(socket_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(ROLE)
            )
        )
