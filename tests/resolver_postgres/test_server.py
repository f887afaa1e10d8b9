"""Where PostgreSQL comes from for tests and a first try: the pgserver wheel's PostgreSQL 16 with pgvector, on
a free loopback port, restartable with its data; and the documented trial command."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from facewatchd.resolver.postgres.server import LocalPostgres, binaries, free_port
from tests.support.postgres import scratch_folder


def test_the_server_has_pgvector_and_keeps_its_data_across_a_restart() -> None:
    folder = scratch_folder()
    try:
        server = LocalPostgres(folder, durable=False)
        with server:
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION vector")
                conn.execute("CREATE TABLE t (v vector(3))")
                conn.execute("INSERT INTO t VALUES ('[1,0,0]')")
        assert not server.running
        with server:  # the same folder and port
            with psycopg.connect(server.dsn) as conn:
                assert conn.execute("SELECT 1 - (v <=> '[1,0,0]') FROM t").fetchone()[0] == 1.0
                assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_trial_command_prints_the_config_to_use_and_stops_on_ctrl_c() -> None:
    folder, port = scratch_folder(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "facewatchd.resolver.postgres.trial", str(folder / "pg"),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        dsn = next(m.group(1) for line in lines if (m := re.match(r'dsn = "(.+)"', line)))
        assert 'type = "postgresql"' in "".join(lines) and f":{port}/" in dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not LocalPostgres(folder / "pg", port).running  # stopped with it
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_binaries_in_a_folder_the_servers_user_cannot_enter_are_copied_where_it_can(tmp_path: Path) -> None:
    """Under root the server runs as nobody; a virtualenv in a private folder (pytest's tmp_path is one) is
    out of its reach, so the binaries are copied into the server's own folder first."""
    private = tmp_path / "site-packages"  # in a 0700 folder, as pytest makes them
    package = binaries().parent.parent  # …/site-packages/pgserver
    shutil.copytree(package / "pginstall", private / "pgserver" / "pginstall", symlinks=True,
                    ignore=shutil.ignore_patterns("include"))
    shutil.copytree(package.parent / "pgserver.libs", private / "pgserver.libs", symlinks=True)
    folder = scratch_folder()
    try:
        server = LocalPostgres(folder, durable=False, binaries=private / "pgserver" / "pginstall" / "bin")
        with server:
            with psycopg.connect(server.dsn) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        copied = (folder / "pginstall" / "pgserver" / "pginstall" / "bin" / "postgres").exists()
        assert copied == (os.geteuid() == 0)  # only the server's own user (nobody, under root) needs the copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)
