"""One contract for every storage adapter behind the resolver's ports, run against the SQLite + files adapters
and the PostgreSQL + pgvector ones alike (parametrised, never copied), on real faces: crops, the face
collection, the name directory, the device shadows, and the core's identity rule over each."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import cv2
import numpy as np
import pytest

from facewatchd.identity import IdentityConfig
from facewatchd.link.local import HubShadowPort, ShadowHub
from facewatchd.messages import FaceQuery, Resolution, new_face_id
from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.local import LocalResolverStores
from facewatchd.resolver.mqtt_adapter import CropEmbedder
from facewatchd.resolver.postgres.config import PostgresResolverConfig
from facewatchd.resolver.postgres.shadows import PostgresShadowStore
from facewatchd.resolver.postgres.stores import PostgresResolverStores
from facewatchd.shadow.document import ShadowError
from facewatchd.shadow.store import ShadowStore
from facewatchd.vision.analyzer import FaceAnalyzer
from tests.support.daemon import FIXTURES
from tests.support.faces import stranger_crop

KINDS = ["sqlite", "postgresql"]
PHOTOS = ("obama", "obama1", "obama2", "obama3", "biden")


@pytest.fixture(scope="module")
def embedder() -> CropEmbedder:
    return CropEmbedder()


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[bytes, np.ndarray]]:
    """A device's crop and the SFace embedding of each photo."""
    analyzer = FaceAnalyzer()
    out = {}
    for name in PHOTOS:
        image = cv2.imread(str(FIXTURES / f"{name}.jpg"))
        face = analyzer.largest(image)
        assert face is not None
        out[name] = (face_crop_jpeg(image, face.face, UplinkConfig()), face.embedding)
    return out


@contextlib.asynccontextmanager
async def open_stores(kind: str, tmp_path: Path, dsn: str | None, embedder: CropEmbedder) -> AsyncIterator[Any]:
    if kind == "sqlite":
        stores = LocalResolverStores(tmp_path / "resolver", embedder)
        try:
            yield stores
        finally:
            stores.close()
    else:
        assert dsn is not None
        async with PostgresResolverStores(PostgresResolverConfig(dsn=dsn), embedder) as pg:
            yield pg


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path, embedder: CropEmbedder) -> AsyncIterator[Any]:
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgresql" else None
    async with open_stores(request.param, tmp_path, dsn, embedder) as opened:
        yield opened


def device_query(face: tuple[bytes, np.ndarray], thing: str = "door-1", **extra: Any) -> FaceQuery:
    """As a device sends it: the crop, and no embedding the resolver would trust."""
    return FaceQuery(new_face_id(), thing, "cam", "t1", face[0], None, time.time(), **extra)


def photo_query(face: tuple[bytes, np.ndarray]) -> FaceQuery:
    """As an enrolment sends it: the crop with the embedding computed from the photo."""
    return FaceQuery(new_face_id(), "", "enroll", "enroll", face[0], face[1], time.time())


async def test_crops_are_stored_read_and_deleted_by_key(stores) -> None:
    q = device_query((stranger_crop(0), np.zeros(0)))
    key = await stores.crops.put(q)
    assert key == await stores.crops.put(q)  # idempotent: the same key for the same face
    assert q.face_id in key and await stores.crops.read(key) == q.crop_jpeg
    await stores.crops.delete([key])
    with pytest.raises(KeyError):
        await stores.crops.read(key)


async def test_the_collection_finds_the_nearest_allowed_person_above_the_threshold(stores, photos) -> None:
    collection = stores.collection
    obama = await collection.index(photo_query(photos["obama"]), "p-obama")
    await collection.index(photo_query(photos["biden"]), "p-biden")
    assert await collection.count_templates() == 2
    probe = device_query(photos["obama1"])  # embedded from its crop by the collection itself
    match = await collection.search(probe, 0.3)
    assert match is not None and (match.person_id, match.face_ref) == ("p-obama", obama)
    assert 0.5 < match.similarity <= 1.0
    assert await collection.search(probe, 0.99) is None  # below the threshold: nobody
    excluded = await collection.search(probe, -1.0, frozenset({"p-obama"}))
    assert excluded is not None and excluded.person_id == "p-biden"  # the next allowed one
    beside = device_query(photos["obama1"], other_faces=(obama,))  # a face in the same frame is someone else
    assert (await collection.search(beside, -1.0)).person_id == "p-biden"


async def test_the_collection_moves_and_removes_templates(stores, photos) -> None:
    collection = stores.collection
    ref = await collection.index(photo_query(photos["obama"]), "p-a")
    await collection.index(photo_query(photos["obama2"]), "p-a")
    ref = await collection.reassign(ref, "p-b", "")
    assert (await collection.search(photo_query(photos["obama"]), 0.9)).person_id == "p-b"
    await collection.delete_faces([ref])
    assert await collection.count_templates() == 1
    assert await collection.delete_person("p-a") == 1 and await collection.count_templates() == 0


async def test_a_crop_without_a_face_is_refused(stores) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.full((120, 120, 3), 128, np.uint8))
    from facewatchd.resolver.ports import NoFaceError
    with pytest.raises(NoFaceError):
        await stores.collection.search(device_query((jpeg.tobytes(), np.zeros(0))), 0.3)


async def test_a_face_id_is_recorded_once_and_links_its_person(stores) -> None:
    names = stores.names
    first = Resolution("f-1", "p-1", None, 0.9, new_person=True, possibly="p-0")
    await names.record(first, "door-1", "k1", "f-1", "cam", "t1")
    await names.record(Resolution("f-1", "p-2", None, 0.5, new_person=True), "door-2", "k9", None)
    assert await names.handled("f-1") == Resolution("f-1", "p-1", None, 0.9, True)  # the first answer stays
    assert await names.handled("f-unknown") is None
    await names.record(Resolution("f-2", "p-1", None, 0.8, new_person=False), "door-2", "k2", None, "cam", "t2")
    person = await names.get("p-1")
    assert person is not None and person.faces == ["f-1", "f-2"] and person.things == ["door-1", "door-2"]
    assert (person.templates, person.possibly, person.sightings, person.tracks, person.crop_key) == (1, "p-0", 2, 2, "k2")
    assert set(person.last_seen_on) == {"door-1/cam", "door-2/cam"}
    assert await names.face("f-2") == (await names.face("f-2")) and (await names.face("f-2")).crop_key == "k2"


async def test_names_are_set_listed_paged_and_forgotten(stores) -> None:
    names = stores.names
    for i in range(3):
        await names.record(Resolution(f"f-{i}", f"p-{i}", None, 1.0, True), "door", f"k{i}", f"f-{i}")
        await names.seen(f"p-{i}", 1e12 + i)  # later sightings: p-2 is the newest
    assert (await names.set_name("p-0", "Ada")).name == "Ada"
    with pytest.raises(KeyError):
        await names.set_name("p-none", "Bob")
    await names.set_reviewed("p-1")
    assert [p.person_id for p in await names.list()] == ["p-0", "p-1", "p-2"]
    page, total = await names.page(0, 2)
    assert ([p.person_id for p in page], total) == (["p-2", "p-1"], 3)
    unnamed, total = await names.page(0, 10, unnamed_only=True)
    assert ([p.person_id for p in unnamed], total) == (["p-2"], 1)  # not named, not dismissed
    await names.move_face("f-2", "p-0", None)
    assert (await names.get("p-0")).faces == ["f-0", "f-2"]
    with pytest.raises(KeyError):
        await names.move_face("f-0", "p-none", None)
    await names.remove_face("f-2")
    assert await names.face("f-2") is None
    assert await names.forget("p-0") == ["k0"] and await names.get("p-0") is None


async def test_the_core_resolves_idempotently_and_names_a_returning_face(stores, photos, tmp_path) -> None:
    hub = ShadowHub(ShadowStore(tmp_path / "shadow.db"))
    resolver = Resolver(stores.crops, stores.collection, stores.names, HubShadowPort(hub), IdentityConfig())
    first = device_query(photos["obama1"])
    answer = await resolver.resolve(first)
    assert answer.new_person and await resolver.resolve(first) == answer  # a redelivery changes nothing
    again = await resolver.resolve(device_query(photos["obama2"], thing="door-2"))
    assert again.person_id == answer.person_id and not again.new_person
    stranger = await resolver.resolve(device_query(photos["biden"]))
    assert stranger.person_id != answer.person_id
    assert again.face_id in hub.store.get("door-2").desired["faces"]  # the answer went through the shadow


async def test_the_identity_rule_decides_the_same_on_every_adapter(photos, tmp_path, postgres_dsn, embedder) -> None:
    """The same faces in the same order: the same decisions and similarities on SQLite and pgvector."""
    seen: dict[str, list[tuple[str, float]]] = {}
    for kind in KINDS:
        async with open_stores(kind, tmp_path / kind, postgres_dsn, embedder) as s:
            resolver = Resolver(s.crops, s.collection, s.names, HubShadowPort(ShadowHub(ShadowStore())),
                                IdentityConfig())
            await resolver.enroll("Barack Obama", [photo_query(photos["obama"])])
            decisions = []
            for name in ("obama1", "obama2", "obama3", "biden", "biden", "obama"):
                q = device_query(photos[name])
                d = await resolver.identify(q)
                decisions.append((d.kind, round(d.similarity, 4)))
                await resolver.resolve(q)
            seen[kind] = decisions
    assert seen["sqlite"] == seen["postgresql"]


@pytest.fixture(params=KINDS)
def shadow_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        with ShadowStore(tmp_path / "shadows.db") as store:
            yield store
        return
    import asyncio

    dsn = request.getfixturevalue("postgres_dsn")

    async def migrate() -> None:
        async with PostgresResolverStores(PostgresResolverConfig(dsn=dsn), lambda _: None):
            pass

    asyncio.run(migrate())
    with PostgresShadowStore(dsn) as store:
        yield store


def test_shadow_documents_keep_versions_deltas_and_tombstones(shadow_store) -> None:
    first = shadow_store.update("door-1", {"state": {"desired": {"faces": {"f-1": {"person_id": "p-1"}}}}}, now=100)
    assert first.delta is not None and first.accepted["version"] == 1
    second = shadow_store.update("door-1", {"state": {"reported": {"faces": {"f-1": {"person_id": "p-1"}}}}}, now=101)
    assert second.accepted["version"] == 2 and second.delta is None  # reported caught up with desired
    assert shadow_store.get("door-1").version == 2 and shadow_store.get("door-2") is None
    with pytest.raises(ShadowError):
        shadow_store.update("door-1", {"state": {}, "version": 1}, now=102)  # a stale version is refused
    assert shadow_store.delete("door-1", now=103)["version"] == 2
    assert shadow_store.get("door-1") is None
    assert shadow_store.update("door-1", {"state": {"desired": {"a": 1}}}, now=104).accepted["version"] == 3
