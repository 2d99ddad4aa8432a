"""A throwaway PostgreSQL server for tests: `temporary_postgres(base_dir)` yields a SQLAlchemy URL.

The server binaries come from PATH or Debian's ``/usr/lib/postgresql/<version>/bin`` (newest
version first); `find_postgres_binaries` raises `PostgresUnavailable` when there are none.
``initdb`` and ``postgres`` refuse to run as root, so as root the server runs as the ``postgres``
system user (Debian's package creates it) or else ``nobody``, in a directory chowned to that
user that every parent directory lets it reach. The server listens on 127.0.0.1 only, on a free
port, trusts every local connection and writes nothing durable (fsync off): for tests only.
"""

from __future__ import annotations

import contextlib
import glob
import grp
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "fambench"
"""The superuser role initdb creates; the URL connects as it (trust authentication)."""

DATABASE = "fambench_test"
"""The database created for the tests (besides initdb's ``postgres``)."""

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
UNPRIVILEGED_USERS = ("postgres", "nobody")
START_TIMEOUT_S = 60
_PORT_ATTEMPTS = 3
_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, NUL included


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries (or no client driver) here: the tests cannot run."""


class PostgresStartError(RuntimeError):
    """The binaries exist but the server could not be set up; the message ends with its log."""


@dataclass(frozen=True)
class PostgresBinaries:
    initdb: Path
    pg_ctl: Path


@dataclass(frozen=True)
class _RunAs:
    """Who runs the server binaries: None fields mean "this process, as it is"."""

    user: str | None = None
    uid: int | None = None
    gid: int | None = None
    home: str | None = None


def _version_key(bindir: Path) -> tuple[int, ...]:
    """(15,) for /usr/lib/postgresql/15/bin, (9, 6) for .../9.6/bin; () if not a version."""
    name = bindir.parent.name
    return tuple(int(p) for p in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else ()


def find_postgres_binaries() -> PostgresBinaries:
    """``initdb`` and ``pg_ctl`` from PATH, else from the newest Debian ``.../<version>/bin``."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return PostgresBinaries(Path(initdb), Path(pg_ctl))
    bindirs = sorted((Path(d) for d in glob.glob(DEBIAN_BIN_GLOB)), key=_version_key, reverse=True)
    for bindir in bindirs:
        initdb_path, pg_ctl_path = bindir / "initdb", bindir / "pg_ctl"
        if os.access(initdb_path, os.X_OK) and os.access(pg_ctl_path, os.X_OK):
            return PostgresBinaries(initdb_path, pg_ctl_path)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
        f"{DEBIAN_BIN_GLOB}; install Debian's `postgresql` package (apt-get install postgresql)"
    )


def _run_as() -> _RunAs:
    """As root: an unprivileged system user to run the server as. Otherwise: ourselves."""
    if os.geteuid() != 0:
        return _RunAs()
    for name in UNPRIVILEGED_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _RunAs(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    raise PostgresUnavailable(
        "running as root and none of the users "
        f"{', '.join(UNPRIVILEGED_USERS)} exists to run the PostgreSQL server as "
        "(initdb and postgres refuse to run as root)"
    )


def _reachable_by(path: Path, run_as: _RunAs) -> bool:
    """Whether `run_as` may traverse every directory from / down to `path` (and write it)."""
    if run_as.uid is None:
        return os.access(path, os.W_OK | os.X_OK)
    try:
        groups = {run_as.gid} | {g.gr_gid for g in grp.getgrall() if run_as.user in g.gr_mem}
        path = path.resolve()
        for directory in [*reversed(path.parents), path]:
            st = directory.stat()
            if st.st_uid == run_as.uid:
                bit = stat.S_IXUSR
            elif st.st_gid in groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
    except OSError:
        return False
    return True


def _server_dir(base_dir: Path | None, run_as: _RunAs) -> Path:
    """A fresh directory for the data and the socket that `run_as` owns and can reach."""
    candidates = [base_dir] if base_dir is not None else []
    candidates += [Path(tempfile.gettempdir()), Path("/tmp")]
    for parent in candidates:
        # Room for "/fambench-pg-XXXXXXXX/.s.PGSQL.NNNNN.lock" below `parent`.
        if len(str(parent.resolve())) + 45 > _SOCKET_PATH_MAX:
            continue
        if not parent.is_dir() or not _reachable_by(parent, run_as):
            continue
        server_dir = Path(tempfile.mkdtemp(prefix="fambench-pg-", dir=parent))
        if run_as.uid is not None:
            os.chown(server_dir, run_as.uid, run_as.gid)
        return server_dir
    raise PostgresStartError(
        f"no directory among {', '.join(map(str, candidates))} that "
        f"{run_as.user or 'this user'} can reach for the PostgreSQL data and socket"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class _Server:
    """Runs the server binaries for one server directory, as `run_as`."""

    def __init__(self, binaries: PostgresBinaries, server_dir: Path, run_as: _RunAs) -> None:
        self.binaries = binaries
        self.dir = server_dir
        self.data = server_dir / "data"
        self.log = server_dir / "server.log"
        self.run_as = run_as
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if run_as.uid is not None:
            self.env.update(HOME=str(server_dir), USER=run_as.user, LOGNAME=run_as.user)

    def run(self, *args: str | Path, timeout: float = START_TIMEOUT_S, check: bool = True):
        kwargs = {}
        if self.run_as.uid is not None:
            kwargs = dict(user=self.run_as.uid, group=self.run_as.gid, extra_groups=[])
        proc = subprocess.run(
            [str(a) for a in args],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise PostgresStartError(
                f"{Path(str(args[0])).name} exited with {proc.returncode}:\n"
                + _tail(proc.stdout + "\n" + proc.stderr)
                + (f"\n--- server log ---\n{_tail(_read(self.log))}" if self.log.exists() else "")
            )
        return proc

    def initdb(self) -> None:
        self.run(
            self.binaries.initdb,
            "--pgdata",
            self.data,
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "16MB",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/postgres.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self, port: int) -> None:
        self.run(
            self.binaries.pg_ctl,
            "--pgdata",
            self.data,
            "--log",
            self.log,
            "--wait",
            "--timeout",
            str(START_TIMEOUT_S),
            "--options",
            f"-p {port}",
            "start",
            timeout=START_TIMEOUT_S + 10,
        )

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        stop = (self.binaries.pg_ctl, "--pgdata", self.data, "--wait", "--timeout", "30", "stop")
        try:
            proc = self.run(*stop, "--mode", "fast", timeout=40, check=False)
            if proc.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run(*stop, "--mode", "immediate", timeout=40, check=False)


def _create_database(port: int, deadline: float) -> None:
    """Connect over TCP (retrying until `deadline`) and create `DATABASE`."""
    try:
        import psycopg2
    except ImportError as exc:
        raise PostgresUnavailable(
            "the PostgreSQL driver psycopg2 is not installed (pip install -e '.[dev]')"
        ) from exc
    while True:
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres", connect_timeout=5
            )
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresStartError(f"server does not accept connections: {exc}") from exc
            time.sleep(0.1)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()


@contextlib.contextmanager
def temporary_postgres(base_dir: Path | str | None = None) -> Iterator[str]:
    """Start a private PostgreSQL server; yield ``postgresql+psycopg2://...`` for its database.

    The data directory and socket live in a new directory under `base_dir` (or the system temp
    directory when `base_dir` is not reachable by the server's user, or its path is too long for
    a socket). On exit, even when the body raised, the server is stopped (``pg_ctl stop -m fast``)
    and the directory removed. Raises `PostgresUnavailable` when there are no binaries and
    `PostgresStartError` (with the log's tail) when the server cannot be started.
    """
    binaries = find_postgres_binaries()
    run_as = _run_as()
    server_dir = _server_dir(Path(base_dir) if base_dir is not None else None, run_as)
    server = _Server(binaries, server_dir, run_as)
    try:
        server.initdb()
        for attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            try:
                server.start(port)
                break
            except PostgresStartError as exc:
                # Another process took the port between _free_port() and the server's bind.
                if attempt + 1 < _PORT_ATTEMPTS and "Address already in use" in str(exc):
                    server.stop()
                    continue
                raise
        _create_database(port, time.monotonic() + START_TIMEOUT_S)
        yield f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server_dir, ignore_errors=True)
