"""The resolver core's identity decisions over the local adapters, on real faces: the uncertain band,
templates learnt only from strong matches, and the naming threshold that rises with the collection."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from facewatchd.identity import IdentityConfig
from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.pipeline.uplink import UplinkConfig, encode_jpeg
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.vision.analyzer import FaceAnalyzer
from tests.support.faces import face_square, lookalike, scene


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


def query(analyzer: FaceAnalyzer, face: np.ndarray) -> FaceQuery:
    found = analyzer.largest(scene(face))
    assert found is not None
    return FaceQuery(new_face_id(), "door-1", "cam", "t1", encode_jpeg(face, UplinkConfig()), found.embedding,
                     time.time())


@pytest.fixture
def resolver(tmp_path: Path) -> EmbeddedResolver:
    # A naming floor of 0.42 (the default is 0.50): the look-alikes below fall on each side of it
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig(templates_per_person=2),
                               identity=IdentityConfig(name_threshold=0.42))
    yield backend
    backend.close()


async def test_a_face_in_the_uncertain_band_is_a_new_person_marked_possibly(resolver, analyzer) -> None:
    obama = (await resolver.resolver.enroll("Barack Obama", [query(analyzer, face_square("obama2.jpg"))])).person
    identity = resolver.resolver.identity
    for alpha in (0.68, 0.7, 0.72, 0.74):  # a look-alike, from near Obama towards Biden
        q = query(analyzer, lookalike("obama2.jpg", "biden.jpg", alpha))
        decision = await resolver.resolver.identify(q)
        if decision.kind == "uncertain":
            break
    else:
        pytest.fail("no look-alike fell in the uncertain band")
    assert identity.new_below <= decision.similarity < identity.naming_threshold(1)
    answer = await resolver.resolver.resolve(q)
    assert answer.new_person and answer.person_id != obama.person_id and answer.name is None
    person = await resolver.stores.names.get(answer.person_id)
    assert person is not None and person.possibly == obama.person_id  # for review, never merged
    assert resolver.resolver.stats.uncertain == 1


async def test_only_strong_matches_become_templates_and_their_number_is_bounded(resolver, analyzer) -> None:
    obama = (await resolver.resolver.enroll("Barack Obama", [query(analyzer, face_square("obama2.jpg"))])).person
    collection = resolver.stores.collection
    weak = query(analyzer, lookalike("obama2.jpg", "biden.jpg", 0.62))
    decision = await resolver.resolver.identify(weak)
    assert decision.named and decision.similarity < resolver.resolver.identity.learn_threshold
    assert (await resolver.resolver.resolve(weak)).person_id == obama.person_id
    assert await collection.count() == 1  # named, but not learnt: one false match never becomes a template
    strong = [query(analyzer, face_square(p)) for p in ("obama1.jpg", "obama3.jpg", "obama.jpg")]
    for q in strong:
        answer = await resolver.resolver.resolve(q)
        assert answer.person_id == obama.person_id and answer.similarity >= 0.55
    assert await collection.count() == 2  # templates_per_person = 2: the enrolled photo and one more
    person = await resolver.stores.names.get(obama.person_id)
    assert person is not None and person.templates == 2 and len(person.faces) == 5


async def test_the_naming_threshold_rises_with_the_collection(resolver, analyzer) -> None:
    await resolver.resolver.enroll("Barack Obama", [query(analyzer, face_square("obama2.jpg"))])
    q = query(analyzer, lookalike("obama2.jpg", "biden.jpg", 0.65))  # cosine about 0.46 to Obama's photo
    assert (await resolver.resolver.identify(q)).named
    rng = np.random.default_rng(1)
    for i in range(1500):  # a collection of 1,500 more persons (random faces: they match nobody)
        v = rng.normal(size=128).astype(np.float32)
        other = FaceQuery(new_face_id(), "", "enroll", "enroll", q.crop_jpeg, v / np.linalg.norm(v), time.time())
        await resolver.stores.collection.index(other, f"person-{i:05d}")
    decision = await resolver.resolver.identify(q)
    assert decision.threshold > IdentityConfig().name_threshold and decision.kind == "uncertain"


async def test_a_weaker_match_seen_on_the_same_camera_minutes_ago_is_marked_possibly(tmp_path, analyzer) -> None:
    """A split of one man (here: his face blended far towards another's, as a profile or a dark frame is far
    from his frontal view) on the camera that saw him minutes ago is linked; elsewhere, or later, it is not."""
    split = None
    for alpha in (0.76, 0.78, 0.8, 0.82, 0.84, 0.86):
        split = query(analyzer, lookalike("obama2.jpg", "biden.jpg", alpha))
        if IdentityConfig().link_similarity <= float(split.embedding @ query(
                analyzer, face_square("obama2.jpg")).embedding) < IdentityConfig().new_below:
            break
    else:
        pytest.fail("no look-alike fell between link_similarity and new_below")

    async def possibly(camera: str, minutes: float) -> tuple[str | None, str]:
        now = [1000.0]
        backend = EmbeddedResolver(tmp_path / f"{camera}-{minutes}", LocalResolverConfig(), clock=lambda: now[0])
        try:
            first = await backend.resolver.resolve(query(analyzer, face_square("obama2.jpg")))  # door-1's "cam"
            now[0] += minutes * 60
            answer = await backend.resolver.resolve(dataclasses.replace(split, face_id=new_face_id(), camera=camera))
            assert answer.new_person and answer.person_id != first.person_id
            person = await backend.stores.names.get(answer.person_id)
            return person.possibly, first.person_id
        finally:
            backend.close()

    linked, first = await possibly("cam", 2)
    assert linked == first
    assert (await possibly("back", 2))[0] is None  # another camera
    assert (await possibly("cam", 10))[0] is None  # the same camera, too long ago
