"""A throwaway PostgreSQL with pgvector on this machine, from the `pgserver` wheel's binaries (PostgreSQL 16.2,
pgvector 0.6.2): for the tests, and for a user trying the PostgreSQL resolver on one box
(`python -m facewatchd.resolver.postgres.trial`). A real deployment points `[resolver] dsn` at its own
PostgreSQL with pgvector instead.

It listens on one loopback TCP port (and a socket in its own folder), with trust authentication for local
connections only. PostgreSQL refuses to run as root, so under root the server runs as `nobody`, owning
its data folder (and, when the virtualenv is in a folder nobody may enter, a copy of the binaries in it).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
USER = "postgres"  # the database superuser initdb creates
DATABASE = "postgres"


def binaries() -> Path:
    """The PostgreSQL binaries the `pgserver` wheel ships (the `postgres` extra)."""
    # Found, not imported: the package's own Python layer (which we do not use) sets up locks on import.
    spec = importlib.util.find_spec("pgserver")
    folder = Path(spec.origin).parent / "pginstall" / "bin" if spec and spec.origin else None
    if folder is None or not (folder / "postgres").exists():
        raise RuntimeError("no PostgreSQL binaries: install the postgres extra (pip install 'facewatchd[postgres]') "
                           "or point [resolver] dsn at your own PostgreSQL with pgvector")
    return folder


def runnable_by(user: pwd.struct_passwd, folder: Path) -> bool:
    """Whether `user` can run the binaries in `folder` (every folder above it must let them through)."""
    try:
        return subprocess.run([str(folder / "postgres"), "--version"], capture_output=True, timeout=30,
                              user=user.pw_uid, group=user.pw_gid).returncode == 0
    except PermissionError:
        return False


def copy_for(user: pwd.struct_passwd, folder: Path, into: Path) -> Path:
    """The binaries copied where `user` can run them (under root, when the virtualenv sits in a private
    folder): bin, lib and share of the installation and the wheel's bundled libraries beside the package,
    where the binaries' rpath ($ORIGIN/../../../pgserver.libs) looks; about 40 MB. Returns the copy's bin."""
    install = folder.parent  # …/pgserver/pginstall
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    target = into / package.name / install.name
    into.mkdir(mode=0o755, exist_ok=True)
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, target / part, symlinks=True, dirs_exist_ok=True)
    if libs.is_dir():
        shutil.copytree(libs, into / libs.name, symlinks=True, dirs_exist_ok=True)
    return target / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """`with LocalPostgres(folder) as pg: pg.dsn`. The folder is created when missing and kept (a second
    start reuses its data); `stop()` is a fast shutdown, `kill()` a crash. The port stays the same across
    restarts, so clients can reconnect."""

    def __init__(self, folder: Path | None = None, port: int | None = None, durable: bool = True,
                 binaries: Path | None = None) -> None:
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="facewatchd-pg-"))
        self.data = self.folder / "data"
        self.log_file = self.folder / "postgres.log"
        self.port = port or free_port()
        self.durable = durable  # False (tests): no fsync, as nothing outlives the test
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        self._bin = binaries  # default: the pgserver wheel's
        self._runnable: Path | None = None  # what the server's user runs: found at the first start

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{DATABASE}"

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        user = {"user": self._user.pw_uid, "group": self._user.pw_gid} if self._user else {}
        assert self._runnable is not None
        done = subprocess.run([str(self._runnable / program), *args], capture_output=True, text=True, timeout=timeout,
                              **user)  # type: ignore[call-overload]
        if done.returncode != 0:
            hint = (f"\n(under root the server runs as nobody, who must be able to reach {self.folder}: "
                    "every folder above it needs o+x)") if self._user and "Permission denied" in done.stderr else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}{hint}\n{self.log()}")
        return str(done.stdout)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._runnable is None:
            found = self._bin or binaries()
            if self._user is not None and not runnable_by(self._user, found):
                found = copy_for(self._user, found, self.folder / "pginstall")
            self._runnable = found
        if self._user is not None:  # the server's own user must own what it writes
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--encoding=UTF8", "--no-sync")
        options = f"-h {HOST} -p {self.port} -k {self.folder}" + ("" if self.durable else " -c fsync=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def kill(self) -> None:
        """Like a crashed server: the postmaster gets SIGKILL (its children end as it goes)."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), 9)

    @property
    def running(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except (FileNotFoundError, PermissionError):
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
