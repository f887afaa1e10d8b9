"""Faces seen in the same frame are other people: on AWS, the Rekognition search never names a face as
an excluded person, however alike they look. Real photos, the real aioboto3 client, our
Rekognition-compatible server."""

from __future__ import annotations

import dataclasses

from facewatchd.messages import FaceQuery
from facewatchd.resolver.aws import EXCLUDING_MAX_FACES, AwsResolverConfig, open_aws_adapters
from tests.support.aws import assert_consistent, face_crop, face_query, handle, persons, query_record


def _config(stack) -> AwsResolverConfig:
    return AwsResolverConfig(bucket=stack.bucket, table=stack.table, collection_id=stack.collection_id, max_attempts=2)


async def test_search_never_returns_an_excluded_person(aws_stack):
    rek = aws_stack.rekognition
    async with open_aws_adapters(_config(aws_stack)) as adapters:
        col = adapters.collection
        await col.index(face_query(face_crop("obama.jpg"), aws_stack.thing), "person-a")
        other_photo = face_query(face_crop("obama1.jpg"), aws_stack.thing)

        match = await col.search(other_photo, 0.8)
        assert match is not None and match.person_id == "person-a"  # the same man: a match without exclude
        assert await col.search(other_photo, 0.8, frozenset({"person-a"})) is None  # → a new person
        assert await col.search(other_photo, 0.8, frozenset({"person-zz"})) == match  # others change nothing
    assert rek.calls["SearchFacesByImage"] == 3


async def test_search_looks_past_a_page_full_of_excluded_faces(aws_stack):
    """MaxFaces is 10 when excluding: 9 faces of A leave room for B in one call; 10 fill the page, and
    one more call with the service's maximum finds B."""
    rek = aws_stack.rekognition
    async with open_aws_adapters(_config(aws_stack)) as adapters:
        col = adapters.collection
        same_photo = face_query(face_crop("obama.jpg"), aws_stack.thing)
        await col.index(face_query(face_crop("obama1.jpg"), aws_stack.thing), "person-b")
        for _ in range(EXCLUDING_MAX_FACES - 1):
            await col.index(same_photo, "person-a")  # identical to the query: every A face outranks B

        rek.calls.clear()
        match = await col.search(same_photo, 0.8, frozenset({"person-a"}))
        assert match is not None and match.person_id == "person-b"
        assert rek.calls["SearchFacesByImage"] == 1

        await col.index(same_photo, "person-a")  # the tenth: now A fills the first page
        rek.calls.clear()
        match = await col.search(same_photo, 0.8, frozenset({"person-a"}))
        assert match is not None and match.person_id == "person-b"
        assert rek.calls["SearchFacesByImage"] == 2

        rek.calls.clear()
        assert await col.search(same_photo, 0.8, frozenset({"person-a", "person-b"})) is None
        assert rek.calls["SearchFacesByImage"] == 2
        assert (await col.search(same_photo, 0.8)).person_id == "person-a"


def test_a_face_seen_beside_a_known_person_becomes_a_new_person(aws_stack, container):
    """Through the Lambda handler: the device says the face was in the same frame as face F (or as
    person P); the resolver indexes a new person rather than naming it F's or P's."""
    thing = aws_stack.thing
    first = face_query(face_crop("obama.jpg"), thing)
    assert handle(container, query_record(first)) == []
    [person_a] = persons(aws_stack)

    beside_face = dataclasses.replace(face_query(face_crop("obama1.jpg"), thing), other_faces=(first.face_id,))
    beside_person = dataclasses.replace(face_query(face_crop("obama2.jpg"), thing), other_persons=(person_a,))
    assert FaceQuery.from_json(beside_face.to_json()).other_faces == (first.face_id,)  # it crosses the wire
    assert handle(container, query_record(beside_face)) == []
    assert handle(container, query_record(beside_person)) == []

    desired = aws_stack.desired()["faces"]
    assert desired[beside_face.face_id]["person_id"] != person_a
    assert desired[beside_person.face_id]["person_id"] != person_a
    assert len(persons(aws_stack)) >= 2 and aws_stack.rekognition.calls["IndexFaces"] >= 2

    indexed = aws_stack.rekognition.calls["IndexFaces"]
    alone = face_query(face_crop("obama3.jpg"), thing)  # no one beside him: a match, not a new person
    assert handle(container, query_record(alone)) == []
    assert aws_stack.desired()["faces"][alone.face_id]["person_id"] in persons(aws_stack)
    assert aws_stack.rekognition.calls["IndexFaces"] == indexed
    assert_consistent(aws_stack)
