"""pytest fixtures for tests that need a broker (a session PKI, a plain and a mutual-TLS mosquitto) or a
PostgreSQL (one server a session, a fresh database a test)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.broker import Mosquitto
from tests.support.postgres import LocalPostgres, fresh_database, running_postgres
from tests.support.tls import TestPki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A plain-MQTT mosquitto on a free loopback port, stopped after the test."""
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture
def tls_broker(tmp_path: Path, pki: TestPki) -> Iterator[Mosquitto]:
    """A mosquitto that requires client certificates from `pki`'s CA; the certificate CN is the username."""
    with Mosquitto(tmp_path / "mosquitto-tls", pki=pki) as b:
        yield b


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """A PostgreSQL 16 with pgvector on a free loopback port in a temp folder, stopped and removed at the end."""
    yield from running_postgres()


@pytest.fixture
def postgres_dsn(postgres_server: LocalPostgres) -> str:
    """The DSN of an empty database of its own on the session's PostgreSQL."""
    return fresh_database(postgres_server)
