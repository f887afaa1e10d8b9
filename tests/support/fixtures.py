"""pytest fixtures for tests that need a broker: a session PKI, a plain and a mutual-TLS mosquitto."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.broker import Mosquitto
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
