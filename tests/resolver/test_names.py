"""One name, one person, in the resolver core over the local adapters, on real faces: a name another person
holds is refused with the merge to make instead; enrolling under a held name adds to its holder; a photo of
somebody else is left out; the template limit applies to an enrolment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.pipeline.uplink import UplinkConfig, encode_jpeg
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.resolver.ports import NameTaken
from facewatchd.vision.analyzer import FaceAnalyzer
from tests.support.faces import face_square, scene


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


def photo(analyzer: FaceAnalyzer, name: str) -> FaceQuery:
    face = face_square(name)
    found = analyzer.largest(scene(face))
    assert found is not None
    return FaceQuery(new_face_id(), "", "enroll", "enroll", encode_jpeg(face, UplinkConfig()), found.embedding,
                     time.time())


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[EmbeddedResolver]:
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig(templates_per_person=2))
    yield backend
    backend.close()


async def test_a_name_another_person_holds_is_refused_with_the_merge_to_make(backend, analyzer) -> None:
    resolver = backend.resolver
    alice = (await resolver.enroll("Alice", [photo(analyzer, "obama.jpg")])).person
    other = (await resolver.enroll("Someone", [photo(analyzer, "biden.jpg")])).person
    assert alice is not None and other is not None and alice.person_id != other.person_id
    with pytest.raises(NameTaken) as taken:
        await resolver.label(other.person_id, "  aLiCe ")  # trimmed, any case: the same name
    assert taken.value.holder == alice.person_id
    assert f"facewatchd faces merge {alice.person_id} {other.person_id}" in str(taken.value)
    assert (await backend.stores.names.get(other.person_id)).name == "Someone"  # nothing changed
    assert (await resolver.label(alice.person_id, "alice")).name == "alice"  # its own name, in another case
    with pytest.raises(ValueError, match="empty"):
        await resolver.label(other.person_id, "   ")


async def test_enrolling_under_a_held_name_adds_to_its_holder(backend, analyzer) -> None:
    resolver = backend.resolver
    first = await resolver.enroll("Barack Obama", [photo(analyzer, "obama.jpg")])
    again = await resolver.enroll(" barack obama", [photo(analyzer, "obama1.jpg"), photo(analyzer, "obama2.jpg")])
    assert first.person is not None and again.person is not None
    assert again.existing and again.person.person_id == first.person.person_id
    assert again.person.name == "Barack Obama" and len(again.person.faces) == 3
    assert [p.name for p in await resolver.persons()] == ["Barack Obama"]  # one person, not two
    # the limit (2 per person): the first photo and one more became templates, the third is a face only
    assert (again.templates_added, again.templates_limit, again.person.templates) == (1, 2, 2)


async def test_a_photo_of_somebody_else_is_reported_not_enrolled(backend, analyzer) -> None:
    resolver = backend.resolver
    biden = (await resolver.enroll("Joe Biden", [photo(analyzer, "biden.jpg")])).person
    obama, wrong = photo(analyzer, "obama.jpg"), photo(analyzer, "biden.jpg")
    done = await resolver.enroll("Barack Obama", [obama, wrong])
    assert done.added == [obama.face_id] and list(done.matched) == [wrong.face_id]
    assert done.matched[wrong.face_id].person_id == biden.person_id
    assert len((await backend.stores.names.get(biden.person_id)).faces) == 1  # nor given to Biden
    only_wrong = await resolver.enroll("Nobody", [photo(analyzer, "biden.jpg")])
    assert only_wrong.person is None and not only_wrong.added  # nothing made: no person "Nobody"
    assert sorted(p.name for p in await resolver.persons()) == ["Barack Obama", "Joe Biden"]
