"""Several resolver workers (`facewatchd resolver`, one process each) on one real PostgreSQL and one real
mosquitto, taking device requests through an MQTT 5 shared subscription: the broker gives each request to one
worker, a face id is recorded once whichever workers see it, and two workers that meet the same new person at
the same moment make one person of it; an operator's correction through either worker reaches every device.

The moment is made the same on purpose: the test holds a lock on the collection table (as a slow database
would) until both workers wait on it with their first face, so both decide at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
import time
from pathlib import Path
from typing import AsyncIterator

import aiomqtt
import psycopg
import pytest

from facewatchd.messages import FaceQuery, new_face_id
from tests.support.broker import Mosquitto
from tests.support.daemon import cli
from tests.support.devices import SimulatedDevice, all_answered
from tests.support.faces import stranger_crop
from tests.support.workers import Device, Worker

pytestmark = pytest.mark.timeout(180)
SITTERS = 8  # new persons, each sent as two requests at once


@pytest.fixture
async def device(broker: Mosquitto) -> AsyncIterator[Device]:
    async with aiomqtt.Client(broker.host, broker.port, identifier="devices") as client:
        await client.subscribe("$aws/things/+/shadow/update/delta", qos=1)
        yield Device(client)


async def waiting_on_locks(dsn: str, n: int, timeout: float = 60) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn, asyncio.timeout(timeout):
        while (await (await conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")).fetchone())[0] < n:
            await asyncio.sleep(0.05)


def request(sitter: int, thing: str) -> FaceQuery:
    return FaceQuery(new_face_id(), thing, "door", f"track-{sitter}", stranger_crop(sitter), None, time.time())


async def test_two_workers_share_the_requests_and_make_each_new_person_once(
        broker: Mosquitto, postgres_dsn: str, device: Device, tmp_path: Path) -> None:
    pairs = [(request(i, "door-1"), request(i, "door-2")) for i in range(SITTERS)]  # the same face at two doors
    repeated = request(SITTERS, "door-1")  # one request sent twice (a device's resend)
    with Worker(tmp_path / "a", "resolver-a", broker, postgres_dsn) as a, \
            Worker(tmp_path / "b", "resolver-b", broker, postgres_dsn) as b:
        async with await psycopg.AsyncConnection.connect(postgres_dsn) as slow, slow.transaction():
            await slow.execute("LOCK TABLE collection IN ACCESS EXCLUSIVE MODE")
            for first, second in pairs:  # back to back: the broker hands one to each worker
                await device.send(first)
                await device.send(second)
            await device.send(repeated)
            await device.send(repeated)
            await waiting_on_locks(postgres_dsn, 2)  # both workers hold the same new face, decided at once
        labels = await device.answers({q.face_id for pair in pairs for q in pair} | {repeated.face_id})
        await device.answers({repeated.face_id}, times=2)  # the resent copy answered again, not stopped mid-way
        stats = {"a": a.stop(), "b": b.stop()}
    assert stats["a"]["received"] >= SITTERS and stats["b"]["received"] >= SITTERS  # both took their share
    assert stats["a"]["received"] + stats["b"]["received"] == 2 * SITTERS + 2 and not stats["a"]["failed"]
    split = [(first.face_id, second.face_id) for first, second in pairs
             if labels[first.face_id]["person_id"] != labels[second.face_id]["person_id"]]
    assert split == []  # no new person made twice by two workers at once
    with psycopg.connect(postgres_dsn) as conn:
        faces = conn.execute("SELECT count(*) FROM faces").fetchone()[0]
        persons = conn.execute("SELECT count(*) FROM persons").fetchone()[0]
        repeats = conn.execute("SELECT count(*) FROM faces WHERE face_id = %s", (repeated.face_id,)).fetchone()[0]
        empty = conn.execute("SELECT count(*) FROM persons p WHERE NOT EXISTS "
                             "(SELECT 1 FROM faces f WHERE f.person_id = p.person_id)").fetchone()[0]
    assert (faces, repeats, empty) == (2 * SITTERS + 1, 1, 0)  # the resent face once, no person without a face
    assert persons == len({label["person_id"] for label in labels.values()})


async def test_a_worker_killed_mid_stream_loses_no_request_and_splits_no_person(
        broker: Mosquitto, postgres_dsn: str, tmp_path: Path) -> None:
    """What the killed worker had taken but not answered, the devices' outboxes send again, and the broker gives
    to the live worker: every request is answered, each sitter once, as one person at both doors."""
    sitters = range(12)
    with Worker(tmp_path / "a", "resolver-a", broker, postgres_dsn) as a, \
            Worker(tmp_path / "b", "resolver-b", broker, postgres_dsn) as b:
        async with SimulatedDevice("door-1", broker.host, broker.port, tmp_path / "door-1") as door1, \
                SimulatedDevice("door-2", broker.host, broker.port, tmp_path / "door-2") as door2:
            sitter_of = {}
            for i in sitters:
                for device in (door1, door2):
                    q = request(i, device.thing)
                    sitter_of[q.face_id] = i
                    device.send(q)
            await a.logged("face_resolved", 2, timeout=30)  # mid-stream: it has work taken and work to come
            a.kill()
            # bounded well inside the test's timeout: a failure is this test's, not a hung run's
            answered = await all_answered([door1, door2], timeout=60)
            resent = door1.uplink.stats.resent + door2.uplink.stats.resent
            labels = {**door1.answers, **door2.answers}
            by_sitter = {i: set() for i in sitters}
            for device in (door1, door2):
                for face_id, at in device.sent_at.items():
                    by_sitter[sitter_of[face_id]].add(labels.get(face_id, {}).get("person_id"))
        survivor = b.stop()
    assert answered, f"unanswered: {door1.unanswered | door2.unanswered}"
    assert all(len(persons) == 1 for persons in by_sitter.values()), by_sitter  # never two persons for one
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM faces").fetchone()[0] == 2 * len(sitters)
    print(f"killed after {len(a.events('face_resolved'))} resolved; the other worker: {survivor}; "
          f"requests resent by the devices: {resent}")


async def test_a_correction_through_either_worker_reaches_every_device(
        broker: Mosquitto, postgres_dsn: str, device: Device, tmp_path: Path) -> None:
    at_door1, at_door2 = request(0, "door-1"), request(0, "door-2")  # one person at two doors
    with Worker(tmp_path / "a", "resolver-a", broker, postgres_dsn), \
            Worker(tmp_path / "b", "resolver-b", broker, postgres_dsn) as b:
        await device.send(at_door1)
        await device.send(at_door2)
        labels = await device.answers({at_door1.face_id, at_door2.face_id})
        person = labels[at_door1.face_id]["person_id"]
        assert labels[at_door2.face_id]["person_id"] == person
        # the operator's command goes to worker b (its control socket), whoever resolved the faces
        await asyncio.to_thread(cli, "faces", "label", person, "Marie Curie", "--config", str(b.config))
        named: set[str] = set()
        async with asyncio.timeout(30):
            async for message in device.client.messages:
                persons = json.loads(message.payload)["state"].get("persons", {})
                if persons.get(person, {}).get("name") == "Marie Curie":
                    named.add(str(message.topic).split("/")[2])
                if named == {"door-1", "door-2"}:
                    break
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT name FROM persons WHERE person_id = %s", (person,)).fetchone() == ("Marie Curie",)


async def shadow_gets(client: aiomqtt.Client, tokens: list[str], answers: Counter[str], timeout: float = 30) -> None:
    """Ask door-1's shadow with each client token (once each) until every token has its /get answer."""
    for token in tokens:
        await client.publish("$aws/things/door-1/shadow/get", json.dumps({"clientToken": token}), qos=1)
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            answers[json.loads(message.payload).get("clientToken")] += 1
            if all(answers[t] for t in tokens):
                return


async def test_one_worker_answers_each_shadow_request_and_another_takes_over_when_it_dies(
        broker: Mosquitto, postgres_dsn: str, tmp_path: Path) -> None:
    """Devices read and write their shadows over MQTT: with two workers, each request is answered once (by
    the worker that holds the lead), and when that worker is killed the other answers from then on."""
    with Worker(tmp_path / "a", "resolver-a", broker, postgres_dsn) as a, \
            Worker(tmp_path / "b", "resolver-b", broker, postgres_dsn) as b:
        async with aiomqtt.Client(broker.host, broker.port, identifier="door-1") as door1:
            await door1.subscribe("$aws/things/door-1/shadow/get/+", qos=1)
            await door1.subscribe("$aws/things/door-1/shadow/update/accepted", qos=1)
            await door1.publish("$aws/things/door-1/shadow/update",
                                json.dumps({"state": {"reported": {"online": True}}, "clientToken": "u"}), qos=1)
            answers: Counter[str] = Counter()
            await shadow_gets(door1, ["g1", "g2", "g3"], answers)
            await shadow_gets(door1, ["last"], answers)  # whatever a second answerer sent has come by now
            assert answers == {"u": 1, "g1": 1, "g2": 1, "g3": 1, "last": 1}, answers
            async with asyncio.timeout(10):  # its log line may come after its answers
                while not (a.events("shadow_service_leading") or b.events("shadow_service_leading")):
                    await asyncio.sleep(0.05)
            leader, follower = (a, b) if a.events("shadow_service_leading") else (b, a)
            assert leader.events("shadow_service_leading") and not follower.events("shadow_service_leading")
            leader.kill()
            await follower.logged("shadow_service_leading", timeout=30)
            answers.clear()
            async with asyncio.timeout(30):  # what went to the dead worker is lost: the device asks again
                n = 0
                while not answers:
                    n += 1
                    with contextlib.suppress(TimeoutError):
                        await shadow_gets(door1, [f"after-{n}"], answers, timeout=2)
            assert all(token.startswith("after-") and n == 1 for token, n in answers.items()), answers
