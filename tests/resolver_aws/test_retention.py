"""Retention on AWS (deploy/lambda/cleanup.py, the scheduled Lambda), against moto (S3, DynamoDB, IoT
shadows) and the Rekognition-compatible server, with a fake clock: exactly the unnamed person not seen
for N days is forgotten, and their faces leave the Rekognition collection (which, unlike S3 and
DynamoDB, never expires anything by itself); named and recently seen persons stay."""

from __future__ import annotations

import os
from pathlib import Path

from facewatchd.resolver.aws import AwsResolverConfig, open_aws_adapters
from facewatchd.resolver.core import DAY_S
from tests.plugins.support import stranger_photo
from tests.resolver.test_retention import FakeClock
from tests.support.aws import TS, assert_consistent, face_crop, face_query, lambda_module, persons


async def test_the_scheduled_cleanup_forgets_old_unnamed_persons_and_their_rekognition_faces(aws_stack, tmp_path: Path):
    cleanup = lambda_module("cleanup")
    rek, door2 = aws_stack.rekognition, aws_stack.new_thing()
    config = AwsResolverConfig(bucket=aws_stack.bucket, table=aws_stack.table, collection_id=aws_stack.collection_id)
    clock = FakeClock(TS)
    stranger = stranger_photo(tmp_path / "stranger.jpg").read_bytes()
    async with open_aws_adapters(config, clock=clock) as adapters:
        resolver = adapters.resolver(config)
        old = (await resolver.resolve(face_query(face_crop("obama.jpg"), aws_stack.thing))).person_id
        named = (await resolver.resolve(face_query(face_crop("biden.jpg"), aws_stack.thing))).person_id
        back = (await resolver.resolve(face_query(stranger, door2))).person_id
        await resolver.label(named, "Joe Biden")
        clock.advance(35)
        assert (await resolver.resolve(face_query(stranger, door2, ts=clock()))).person_id == back  # seen again
    assert len({old, named, back}) == 3
    old_crops = [f["crop_key"] for f in persons(aws_stack)[old]["faces"]]
    assert rek.faces_of(aws_stack.collection_id, old) and old_crops

    settings = cleanup.CleanupSettings.from_env({**os.environ, "UNNAMED_PERSON_DAYS": "30"})
    assert await cleanup.cleanup(settings, now=clock()) == {"ok": True, "forgotten": [old], "orphan_faces": 0}

    assert sorted(persons(aws_stack)) == sorted([named, back])
    # no profile expires by TTL: a named person is kept for good, an unnamed one goes by its last sighting
    assert all("expires_at" not in p["profile"] for p in persons(aws_stack).values())
    assert rek.faces_of(aws_stack.collection_id, old) == []  # out of the collection: no future match
    assert rek.faces_of(aws_stack.collection_id, named) and rek.faces_of(aws_stack.collection_id, back)
    assert not set(old_crops) & set(aws_stack.s3_keys()) and len(aws_stack.s3_keys()) == 3
    assert aws_stack.desired()["persons"][old]["forget"] is True  # the device that held them drops them
    assert "persons" not in aws_stack.desired(door2)
    assert_consistent(aws_stack)
    # the next run finds nothing more; ten years on, the named person is still kept
    assert await cleanup.cleanup(settings, now=clock()) == {"ok": True, "forgotten": [], "orphan_faces": 0}
    assert await cleanup.cleanup(settings, now=clock() + 3650 * DAY_S) == {"ok": True, "forgotten": [back], "orphan_faces": 0}
    assert sorted(persons(aws_stack)) == [named] and rek.faces_of(aws_stack.collection_id, back) == []


def test_the_lambda_entry_point_reads_its_settings_from_the_environment(aws_stack, monkeypatch):
    cleanup = lambda_module("cleanup")
    monkeypatch.setenv("UNNAMED_PERSON_DAYS", "7")
    settings = cleanup.CleanupSettings.from_env(os.environ)
    assert (settings.resolver.table, settings.unnamed_person_days) == (aws_stack.table, 7)
    scheduled = {"version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": "2026-11-29T03:00:00Z", "region": "us-east-1",
                 "resources": ["arn:aws:events:us-east-1:123456789012:rule/cleanup"], "detail": {}}
    assert cleanup.handler(scheduled) == {"ok": True, "forgotten": [], "orphan_faces": 0}  # nothing there


async def test_faces_whose_person_expired_by_ttl_leave_the_collection_after_the_grace(aws_stack):
    """DynamoDB's TTL removes a person's records (named or not) after RETENTION_DAYS unseen; their faces
    must not stay in Rekognition for ever. A face is deleted only when found without a person twice,
    ORPHAN_GRACE_S apart: a new person's face is indexed a moment before the person is recorded."""
    cleanup = lambda_module("cleanup")
    rek, ddb = aws_stack.rekognition, aws_stack.client("dynamodb")
    config = AwsResolverConfig(bucket=aws_stack.bucket, table=aws_stack.table, collection_id=aws_stack.collection_id)
    clock = FakeClock(TS)
    async with open_aws_adapters(config, clock=clock) as adapters:
        resolver = adapters.resolver(config)
        expired = (await resolver.resolve(face_query(face_crop("obama.jpg"), aws_stack.thing))).person_id
        await resolver.label(expired, "Barack Obama")
        kept = (await resolver.resolve(face_query(face_crop("biden.jpg"), aws_stack.thing))).person_id
        await resolver.label(kept, "Joe Biden")
    for item in aws_stack.table_items():  # what TTL does to the expired person's records
        if item.get("person_id") == expired or item["pk"] == f"PERSON#{expired}":
            ddb.delete_item(TableName=aws_stack.table, Key={"pk": {"S": item["pk"]}, "sk": {"S": item["sk"]}})
    assert rek.faces_of(aws_stack.collection_id, expired)
    settings = cleanup.CleanupSettings.from_env({**os.environ, "ORPHAN_GRACE_S": "3600"})

    first = await cleanup.cleanup(settings, now=clock())
    assert first["orphan_faces"] == 0 and rek.faces_of(aws_stack.collection_id, expired)  # only marked
    clock.advance(1800 / DAY_S)
    assert (await cleanup.cleanup(settings, now=clock()))["orphan_faces"] == 0  # within the grace
    clock.advance(1801 / DAY_S)
    assert (await cleanup.cleanup(settings, now=clock()))["orphan_faces"] == 1
    assert rek.faces_of(aws_stack.collection_id, expired) == []
    assert rek.faces_of(aws_stack.collection_id, kept) and sorted(persons(aws_stack)) == [kept]
    assert not [i for i in aws_stack.table_items() if i["pk"] == "ORPHANS"]  # the mark went with the face
    assert_consistent(aws_stack)


async def test_a_sighting_by_a_device_cache_moves_last_seen_on_dynamodb(aws_stack):
    config = AwsResolverConfig(bucket=aws_stack.bucket, table=aws_stack.table, collection_id=aws_stack.collection_id)
    clock = FakeClock(TS)
    async with open_aws_adapters(config, clock=clock) as adapters:
        resolver = adapters.resolver(config)
        person = (await resolver.resolve(face_query(face_crop("obama.jpg"), aws_stack.thing))).person_id
        await resolver.seen(person, TS + 20 * DAY_S)
        await resolver.seen(person, TS + 10 * DAY_S)  # an older sighting changes nothing
        await resolver.seen("person-unknown", TS)  # nor does one of nobody
        assert (await adapters.names.get(person)).last_seen == TS + 20 * DAY_S
        assert await resolver.forget_unseen(30, TS + 45 * DAY_S) == []
        assert [p.person_id for p in await resolver.forget_unseen(30, TS + 51 * DAY_S)] == [person]
    assert persons(aws_stack) == {}
