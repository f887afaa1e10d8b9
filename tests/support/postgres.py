"""A throwaway PostgreSQL with pgvector for the tests (facewatchd.resolver.postgres.server, from the pgserver
wheel): one server a test session, a fresh database per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import psycopg

from facewatchd.resolver.postgres.server import LocalPostgres


def scratch_folder() -> Path:
    # Not pytest's tmp_path: its folders are private to root, and under root the server runs as nobody.
    folder = Path(tempfile.mkdtemp(prefix="facewatchd-pg-"))
    folder.chmod(0o755)  # nobody may reach a server folder inside it
    return folder


def running_postgres() -> Iterator[LocalPostgres]:
    folder = scratch_folder()
    try:
        with LocalPostgres(folder, durable=False) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server: LocalPostgres) -> str:
    """A new empty database on `server`; returns its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.dsn.rsplit("/", 1)[0] + f"/{name}"
