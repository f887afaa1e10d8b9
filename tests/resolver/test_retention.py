"""Retention on the embedded resolver, with a fake clock: exactly the unnamed persons not seen for N days
are forgotten (collection, crops, records, and the forget goes to every device that holds them through
its shadow); named persons and persons seen again stay. Also the crops older than N days."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.resolver.core import DAY_S, unseen_unnamed
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.resolver.ports import Person
from tests.support.faces import stranger_crop

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float) -> None:
        self.now += days * DAY_S


def crop() -> bytes:
    ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    return jpeg.tobytes()


def face(seed: int) -> np.ndarray:
    """An embedding of one made-up person: random unit vectors match nobody else, the same one matches itself."""
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def embedded(tmp_path: Path, clock: FakeClock) -> EmbeddedResolver:
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig(), clock=clock)
    yield backend
    backend.close()


async def seen(embedded: EmbeddedResolver, clock: FakeClock, seed: int, thing: str = "door-1") -> str:
    """A device sends a crop of one person (the resolver embeds the crop itself: `seed` is who it is)."""
    q = FaceQuery(new_face_id(), thing, "cam", "t", stranger_crop(seed), None, clock())
    return (await embedded.resolver.resolve(q)).person_id


def test_the_rule_takes_unnamed_persons_seen_before_the_cutoff_only():
    now = T0 + 30 * DAY_S
    persons = [Person("old", None, last_seen=T0 - 1), Person("edge", None, last_seen=T0),
               Person("named", "Ann", last_seen=0.0), Person("new", None, last_seen=now)]
    assert [p.person_id for p in unseen_unnamed(persons, now, 30)] == ["old"]


async def test_exactly_the_old_unnamed_persons_are_forgotten_everywhere(embedded, clock):
    resolver, stores = embedded.resolver, embedded.stores
    named_long_ago = (await resolver.enroll("Ann Named", [FaceQuery(new_face_id(), "", "enroll", "enroll", crop(),
                                                                    face(1), clock())], thing="door-1")).person
    old = await seen(embedded, clock, 2)
    old_elsewhere = await seen(embedded, clock, 3, thing="door-2")  # a second device holds this one
    labelled_later = await seen(embedded, clock, 4)
    back_again = await seen(embedded, clock, 5)
    clock.advance(20)
    await resolver.label(labelled_later, "Lena Labelled")
    clock.advance(15)  # 35 days after the first sightings
    assert await seen(embedded, clock, 5, thing="door-2") == back_again  # seen again today
    new = await seen(embedded, clock, 6)
    crops_before = sorted(p.relative_to(stores.crops.root) for p in stores.crops.root.rglob("*.jpg"))
    faces_of_old = {p: (await stores.names.get(p)).faces for p in (old, old_elsewhere)}

    forgotten = await resolver.forget_unseen(30, clock())

    assert sorted(p.person_id for p in forgotten) == sorted([old, old_elsewhere])
    assert sorted(p.person_id for p in await resolver.persons()) == sorted(
        [named_long_ago.person_id, labelled_later, back_again, new])
    # the collection: their templates are gone, nobody else's
    templates = stores.db.run(lambda c: c.execute("SELECT person_id, COUNT(*) FROM collection GROUP BY person_id")
                              .fetchall())
    assert sorted(dict(templates)) == sorted([named_long_ago.person_id, labelled_later, back_again, new])
    # crops: exactly theirs deleted
    gone = {f"{face_id}.jpg" for faces in faces_of_old.values() for face_id in faces}
    crops_after = sorted(p.relative_to(stores.crops.root) for p in stores.crops.root.rglob("*.jpg"))
    assert crops_after == [p for p in crops_before if p.name not in gone] and len(crops_after) == len(crops_before) - 2
    # every device that held them is told to forget them, through its shadow
    door1 = embedded.shadow_store.get("door-1").desired["persons"]
    door2 = embedded.shadow_store.get("door-2").desired["persons"]
    assert door1[old]["forget"] is True and old_elsewhere not in door1
    assert door2[old_elsewhere]["forget"] is True and old not in door2
    assert not any(p in door1 or p in door2 for p in (back_again, new, named_long_ago.person_id))
    # a second sweep at the same time finds nothing more
    assert await resolver.forget_unseen(30, clock()) == []
    # years later, named persons are still kept
    clock.advance(3650)
    assert sorted(p.person_id for p in await resolver.forget_unseen(30, clock())) == sorted([back_again, new])
    assert sorted(p.person_id for p in await resolver.persons()) == sorted([named_long_ago.person_id, labelled_later])


async def test_crops_older_than_the_cutoff_are_deleted_and_their_records_kept(embedded, clock):
    stores = embedded.stores
    person = await seen(embedded, clock, 7)
    await seen(embedded, clock, 7)
    [old_key, new_key] = [(await stores.names.face(f)).crop_key for f in (await stores.names.get(person)).faces]
    os.utime(stores.crops.root / old_key, (T0 - 31 * DAY_S, T0 - 31 * DAY_S))
    os.utime(stores.crops.root / new_key, (T0 - 29 * DAY_S, T0 - 29 * DAY_S))
    assert await stores.crops.delete_older(T0 - 30 * DAY_S) == 1
    assert not (stores.crops.root / old_key).exists() and (stores.crops.root / new_key).exists()
    assert len((await stores.names.get(person)).faces) == 2  # the records stay: a crop is evidence, not identity


async def test_a_name_given_while_the_person_expires_is_never_lost_silently(embedded, clock):
    """An operator names a person while retention is forgetting them (the collection is slow to answer):
    the name must not succeed and then vanish. Naming waits, then says the person is gone."""
    import asyncio

    resolver, collection = embedded.resolver, embedded.stores.collection
    person = await seen(embedded, clock, 7)
    clock.advance(40)
    deleting, go_on = asyncio.Event(), asyncio.Event()
    delete_person = collection.delete_person

    async def slow_delete(person_id: str) -> int:
        deleting.set()
        await go_on.wait()
        return await delete_person(person_id)

    collection.delete_person = slow_delete  # type: ignore[method-assign]
    expiry = asyncio.ensure_future(resolver.forget_unseen(30, clock()))
    await deleting.wait()  # retention is forgetting the person now
    label = asyncio.ensure_future(resolver.label(person, "Late Label"))
    await asyncio.sleep(0)  # let the label start
    go_on.set()
    assert [p.person_id for p in await expiry] == [person]
    with pytest.raises(KeyError):
        await label  # not "named", then forgotten behind the operator's back
    assert await embedded.stores.names.get(person) is None
