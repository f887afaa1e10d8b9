"""A PostgreSQL that goes away under a running worker: each face that arrives meanwhile fails with an error
that names the database, the worker keeps running, and the device's outbox sends the face again until the
database is back and it is answered: nothing is lost, nothing is recorded twice. A worker started before its
database waits for it."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.resolver.postgres.server import LocalPostgres
from tests.support.broker import Mosquitto
from tests.support.devices import SimulatedDevice, all_answered
from tests.support.faces import stranger_crop
from tests.support.postgres import scratch_folder
from tests.support.workers import Worker

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A server of this test's own, to stop and start."""
    folder = scratch_folder()
    try:
        with LocalPostgres(folder, durable=False) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_face_sent_while_postgresql_is_down_is_answered_once_it_is_back(
        broker: Mosquitto, own_postgres: LocalPostgres, tmp_path: Path) -> None:
    with Worker(tmp_path / "w", "resolver-w", broker, own_postgres.dsn) as worker:
        async with SimulatedDevice("door-1", broker.host, broker.port, tmp_path / "door", answer_timeout_s=1) as door:
            await asyncio.to_thread(own_postgres.stop)
            face = FaceQuery(new_face_id(), "door-1", "door", "t1", stranger_crop(3), None, time.time())
            door.send(face)
            await worker.logged("resolve_failed", 2)  # sent, failed, sent again: still running, still failing
            failure = worker.events("resolve_failed")[0]
            assert f"PostgreSQL at 127.0.0.1:{own_postgres.port}/postgres" in failure["error"]
            assert not door.answers
            await asyncio.to_thread(own_postgres.start)
            assert await all_answered([door], timeout=60)
        assert worker.stop()["resolved"] == 1
    with psycopg.connect(own_postgres.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM faces WHERE face_id = %s", (face.face_id,)).fetchone()[0] == 1


async def test_a_worker_started_before_its_database_waits_for_it(broker: Mosquitto, own_postgres: LocalPostgres,
                                                                 tmp_path: Path) -> None:
    await asyncio.to_thread(own_postgres.stop)
    worker = Worker(tmp_path / "w", "resolver-w", broker, own_postgres.dsn)
    worker.start(wait=False)
    try:
        await worker.logged("postgres_unavailable", 2)  # said, and tried again
        assert f"PostgreSQL at 127.0.0.1:{own_postgres.port}/postgres" in worker.events("postgres_unavailable")[0]["error"]
        await asyncio.to_thread(own_postgres.start)
        await asyncio.to_thread(worker.wait_connected)
    finally:
        worker.kill()
