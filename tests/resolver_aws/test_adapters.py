"""The AWS adapters on their own, and the Rekognition test server's protocol, with real clients."""

from __future__ import annotations

import asyncio
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from facewatchd.messages import Resolution
from facewatchd.resolver.aws import AwsResolverConfig, open_aws_adapters
from facewatchd.resolver.ports import NoFaceError
from facewatchd.vision.embedder import SFACE_COSINE_THRESHOLD
from tests.support.aws import FIXTURES, blank_jpeg, face_crop, face_query, persons
from tests.support.rekognition_server import cosine_from_similarity, similarity_from_cosine


def _config(stack, **changes) -> AwsResolverConfig:
    fields = {"bucket": stack.bucket, "table": stack.table, "collection_id": stack.collection_id, "max_attempts": 2}
    return AwsResolverConfig(**(fields | changes))


def test_config_refuses_unknown_and_out_of_range_fields(aws_stack):
    with pytest.raises(ValueError):
        _config(aws_stack, threshold=80)
    with pytest.raises(ValueError):
        _config(aws_stack, face_match_threshold=101)
    assert _config(aws_stack).face_match_threshold == 80 and _config(aws_stack).quality_filter == "AUTO"


async def test_two_cold_starts_at_once_both_ensure_the_collection(aws_stack):
    cfg = _config(aws_stack, collection_id=f"{aws_stack.collection_id}-new")
    async with open_aws_adapters(cfg) as a, open_aws_adapters(cfg) as b:
        await asyncio.gather(a.collection.ensure_collection(), b.collection.ensure_collection())
        await a.collection.ensure_collection()
    assert aws_stack.rekognition.calls["CreateCollection"] == 3
    assert cfg.collection_id in aws_stack.rekognition.collections


async def test_shadow_version_conflicts_are_retried(aws_stack):
    iot = aws_stack.client("iot-data")
    iot.update_thing_shadow(thingName=aws_stack.thing, payload=json.dumps({"state": {"reported": {"up": True}}}))
    async with open_aws_adapters(_config(aws_stack)) as adapters:
        # Eight writers read the same version; all but one meet a 409 and must re-read and retry.
        await asyncio.gather(*(adapters.shadow.update_desired(aws_stack.thing, {f"k{i}": i}) for i in range(8)))
        await adapters.shadow.update_desired(aws_stack.thing, {"k0": None})  # None deletes, as on AWS
    doc = json.loads(iot.get_thing_shadow(thingName=aws_stack.thing)["payload"].read())
    assert doc["state"]["desired"] == {f"k{i}": i for i in range(1, 8)}
    assert doc["version"] == 1 + 8 + 1  # each patch applied exactly once


async def test_record_is_conditional_and_atomic(aws_stack):
    async with open_aws_adapters(_config(aws_stack)) as adapters:
        names = adapters.names
        first = Resolution("f-1", "person-a", None, 1.0, new_person=True)
        await names.record(first, "cam-1", "faces/cam-1/k1.jpg", "ref-1")
        await names.record(Resolution("f-1", "person-b", None, 0.9, new_person=False), "cam-2", "k", None)
        assert await names.handled("f-1") == first  # the second record of the same face id changed nothing
        assert set(persons(aws_stack)) == {"person-a"}
        person = await names.get("person-a")
        assert person and person.faces == ["f-1"] and person.things == ["cam-1"]
        with pytest.raises(KeyError):
            await names.set_name("person-zz", "Nobody")
        assert (await names.set_name("person-a", "Ann")).name == "Ann"
        assert (await names.handled("f-1")).name == "Ann"  # a redelivery answers with the current name
        assert (await names.set_name("person-a", None)).name is None
        assert await names.forget("person-a") == ["faces/cam-1/k1.jpg"]
        assert await names.get("person-a") is None and await names.handled("f-1") is None
    assert aws_stack.table_items() == []


async def test_collection_search_index_and_delete_person(aws_stack):
    async with open_aws_adapters(_config(aws_stack)) as adapters:
        col = adapters.collection
        obama = face_query(face_crop("obama.jpg"), aws_stack.thing)
        assert await col.search(obama, 0.8) is None
        ref = await col.index(obama, "person-obama")
        match = await col.search(face_query(face_crop("obama1.jpg"), aws_stack.thing), 0.8)
        assert match and match.person_id == "person-obama" and match.face_ref == ref and 0.8 <= match.similarity < 1
        assert await col.search(face_query(face_crop("biden.jpg"), aws_stack.thing), 0.8) is None
        with pytest.raises(NoFaceError):
            await col.search(face_query(blank_jpeg(), aws_stack.thing), 0.8)
        await col.index(face_query(face_crop("obama2.jpg"), aws_stack.thing), "person-obama")
        assert await col.delete_person("person-obama") == 2
        assert await col.delete_person("person-obama") == 0


def test_similarity_mapping_puts_sface_threshold_at_80():
    assert similarity_from_cosine(SFACE_COSINE_THRESHOLD) == pytest.approx(80)
    assert similarity_from_cosine(1.0) == pytest.approx(100) and similarity_from_cosine(-1.0) == pytest.approx(0)
    for s in (0, 40, 80, 90, 100):
        assert similarity_from_cosine(cosine_from_similarity(s)) == pytest.approx(s)


def test_rekognition_server_speaks_the_real_protocol(rekognition_server):
    rek = boto3.client("rekognition", region_name="us-east-1", endpoint_url=rekognition_server.url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")

    def code(call, **kwargs) -> str:
        with pytest.raises(ClientError) as e:
            call(**kwargs)
        return e.value.response["Error"]["Code"]

    searches = rekognition_server.calls["SearchFacesByImage"]  # the server is shared by the session

    assert code(rek.describe_collection, CollectionId="proto-none") == "ResourceNotFoundException"
    created = rek.create_collection(CollectionId="proto")
    assert created["CollectionArn"].endswith(":collection/proto") and created["StatusCode"] == 200
    assert code(rek.create_collection, CollectionId="proto") == "ResourceAlreadyExistsException"
    assert code(rek.index_faces, CollectionId="proto", Image={"Bytes": b"GIF89a...."}) == "InvalidImageFormatException"
    assert code(rek.search_faces_by_image, CollectionId="proto",
                Image={"Bytes": blank_jpeg()}) == "InvalidParameterException"

    two = (FIXTURES / "two_people.jpg").read_bytes()
    indexed = rek.index_faces(CollectionId="proto", Image={"Bytes": two}, ExternalImageId="p1", MaxFaces=1)
    assert len(indexed["FaceRecords"]) == 1
    assert [u["Reasons"] for u in indexed["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]]
    rek.index_faces(CollectionId="proto", Image={"Bytes": face_crop("biden.jpg")}, ExternalImageId="p2")
    assert rek.describe_collection(CollectionId="proto")["FaceCount"] == 2

    page = rek.list_faces(CollectionId="proto", MaxResults=1)
    rest = rek.list_faces(CollectionId="proto", MaxResults=1, NextToken=page["NextToken"])
    assert "NextToken" not in rest
    ids = [f["FaceId"] for f in page["Faces"] + rest["Faces"]]
    deleted = rek.delete_faces(CollectionId="proto", FaceIds=ids + ["00000000-0000-0000-0000-000000000000"])
    assert sorted(deleted["DeletedFaces"]) == sorted(ids)
    assert deleted["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["FACE_NOT_FOUND"]
    assert rek.delete_collection(CollectionId="proto")["StatusCode"] == 200
    assert rekognition_server.calls["SearchFacesByImage"] - searches == 1  # the blank image above, counted once
