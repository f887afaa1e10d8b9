"""End to end through the Lambda handler: real SQS-shaped events with real FaceQuery messages, moto
for S3/DynamoDB/SQS/IoT, our Rekognition-compatible server matching real faces."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.aws import (
    LambdaContext, assert_consistent, face_crop, face_query, handle, handler_module, open_container, persons,
    query_record, sqs_record,
)


def test_unknown_face_is_stored_searched_indexed_recorded_and_answered(aws_stack, container):
    rek, thing = aws_stack.rekognition, aws_stack.thing
    crop = face_crop("obama.jpg")
    q = face_query(crop, thing)

    assert handle(container, query_record(q)) == []

    key = f"faces/{thing}/2023/11/14/{q.face_id}.jpg"  # date from the query's ts
    assert aws_stack.s3_keys() == [key]
    s3 = aws_stack.client("s3")
    obj = s3.get_object(Bucket=aws_stack.bucket, Key=key)
    assert obj["Body"].read() == crop and obj["ServerSideEncryption"] == "AES256"
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=aws_stack.bucket, Key=key)["TagSet"]}
    assert tags == {"purpose": "face-crop", "retention-days": "30"}

    assert rek.calls["SearchFacesByImage"] == 1 and rek.calls["IndexFaces"] == 1

    [(person_id, entry)] = persons(aws_stack).items()
    [face] = entry["faces"]
    assert face["face_id"] == q.face_id and face["crop_key"] == key and face["thing"] == thing
    assert rek.faces_of(aws_stack.collection_id, person_id) == [face["face_ref"]]
    profile = entry["profile"]
    assert profile["things"] == {thing} and profile["labelled"] is False and "name" not in profile
    # the face records expire by TTL (retention); the profile does not: the scheduled cleanup forgets an
    # unnamed person from its last sighting, and a named one is kept
    assert "expires_at" not in profile and abs(int(face["expires_at"]) - (time.time() + 30 * 86_400)) < 120
    assert_consistent(aws_stack)

    answer = aws_stack.desired()["faces"][q.face_id]
    assert answer["person_id"] == person_id and answer["similarity"] == 1.0


def test_another_photo_of_the_same_person_matches_without_indexing(aws_stack, container):
    rek, thing = aws_stack.rekognition, aws_stack.thing
    first = face_query(face_crop("obama.jpg"), thing)
    second = face_query(face_crop("obama1.jpg"), thing)

    assert handle(container, query_record(first)) == []
    assert handle(container, query_record(second)) == []

    assert rek.calls["SearchFacesByImage"] == 2  # exactly one search per unknown face
    assert rek.calls["IndexFaces"] == 1  # indexed once, when the person was new
    [(person_id, entry)] = persons(aws_stack).items()
    assert {f["face_id"] for f in entry["faces"]} == {first.face_id, second.face_id}
    answer = aws_stack.desired()["faces"][second.face_id]
    assert answer["person_id"] == person_id and 0.8 <= answer["similarity"] < 1.0
    assert_consistent(aws_stack)


def test_redelivered_message_changes_nothing(aws_stack, container):
    rek = aws_stack.rekognition
    q = face_query(face_crop("obama.jpg"), aws_stack.thing)
    record = query_record(q)
    assert handle(container, record) == []
    items, keys, calls = aws_stack.table_items(), aws_stack.s3_keys(), rek.calls.copy()

    # SQS redelivers the same message; a device resending after a lost ack makes a new message id.
    assert handle(container, record, query_record(q)) == []

    assert rek.calls == calls  # no second search, no second index
    assert aws_stack.table_items() == items and aws_stack.s3_keys() == keys
    assert q.face_id in aws_stack.desired()["faces"]  # answered again, in case the device missed it


def test_one_batch_two_people_two_devices_sequential(aws_stack, container):
    rek = aws_stack.rekognition
    other = aws_stack.new_thing()
    obama = face_query(face_crop("two_people.jpg", 0), aws_stack.thing)  # Obama is on the left
    biden = face_query(face_crop("two_people.jpg", 1), other)
    biden_again = face_query(face_crop("biden.jpg"), other)

    assert handle(container, query_record(obama), query_record(biden), query_record(biden_again)) == []

    # two new persons, and Biden's second photo, a strong match (>= learn_threshold), as his second template
    assert rek.calls["SearchFacesByImage"] == 3 and rek.calls["IndexFaces"] == 3
    by_person = persons(aws_stack)
    assert sorted(len(e["faces"]) for e in by_person.values()) == [1, 2]
    assert sorted(len(rek.faces_of(aws_stack.collection_id, pid)) for pid in by_person) == [1, 2]
    obama_pid = aws_stack.desired()["faces"][obama.face_id]["person_id"]
    shadow = aws_stack.desired(other)["faces"]
    assert shadow[biden.face_id]["person_id"] == shadow[biden_again.face_id]["person_id"] != obama_pid
    assert_consistent(aws_stack)


def test_operator_label_reaches_every_device_that_holds_the_person(aws_stack, container):
    other = aws_stack.new_thing()
    assert handle(container, query_record(face_query(face_crop("obama.jpg"), aws_stack.thing))) == []
    assert handle(container, query_record(face_query(face_crop("obama1.jpg"), other))) == []
    [person_id] = persons(aws_stack)

    result = container.run(container.handle_operator(
        {"action": "label", "person_id": person_id, "name": "Barack Obama"}))

    assert result["ok"] and result["person"]["name"] == "Barack Obama"
    assert sorted(result["person"]["things"]) == sorted([aws_stack.thing, other])
    for thing in (aws_stack.thing, other):
        assert aws_stack.desired(thing)["persons"][person_id]["name"] == "Barack Obama"
    listed = container.run(container.handle_operator({"action": "list"}))
    assert [(p["person_id"], p["name"], len(p["faces"])) for p in listed["persons"]] == [(person_id, "Barack Obama", 2)]
    assert persons(aws_stack)[person_id]["profile"]["labelled"] is True

    # A later face of the labelled person is answered with the name.
    later = face_query(face_crop("obama2.jpg"), aws_stack.thing)
    assert handle(container, query_record(later)) == []
    assert aws_stack.desired()["faces"][later.face_id]["name"] == "Barack Obama"


def test_operator_forget_removes_the_person_everywhere(aws_stack, container):
    rek = aws_stack.rekognition
    other = aws_stack.new_thing()
    obama = [face_query(face_crop("obama.jpg"), aws_stack.thing), face_query(face_crop("obama1.jpg"), other)]
    biden = face_query(face_crop("biden.jpg"), aws_stack.thing)
    assert handle(container, *map(query_record, [*obama, biden])) == []
    person_id = aws_stack.desired()["faces"][obama[0].face_id]["person_id"]
    biden_id = aws_stack.desired()["faces"][biden.face_id]["person_id"]

    result = container.run(container.handle_operator({"action": "forget", "person_id": person_id}))

    assert result["ok"]
    assert rek.faces_of(aws_stack.collection_id, person_id) == []
    assert len(rek.faces_of(aws_stack.collection_id, biden_id)) == 1
    assert aws_stack.s3_keys() == [f"faces/{aws_stack.thing}/2023/11/14/{biden.face_id}.jpg"]
    left = aws_stack.table_items()
    assert not [i for i in left if person_id in (i.get("person_id"), i["pk"][len("PERSON#"):])]
    assert not [i for i in left if i.get("face_id") in {q.face_id for q in obama}]
    assert set(persons(aws_stack)) == {biden_id}
    for thing in (aws_stack.thing, other):
        assert aws_stack.desired(thing)["persons"][person_id]["forget"] is True
    assert_consistent(aws_stack)

    again = container.run(container.handle_operator({"action": "forget", "person_id": person_id}))
    assert again == {"ok": False, "error": f"unknown person {person_id}"}


@pytest.mark.parametrize("event", [
    {"action": "rename", "person_id": "person-1"},
    {"action": "label", "person_id": "person-1"},
    {"action": "label", "person_id": "../etc", "name": "x"},
])
def test_operator_refuses_bad_requests(aws_stack, container, event):
    result = container.run(container.handle_operator(event))
    assert result["ok"] is False and result["error"].startswith("bad request")


def test_lambda_entry_point_keeps_one_container_and_loop(aws_stack):
    mod = handler_module()
    mod.container.cache_clear()
    try:
        q1 = face_query(face_crop("obama.jpg"), aws_stack.thing)
        q2 = face_query(face_crop("obama1.jpg"), aws_stack.thing)
        assert mod.handler({"Records": [query_record(q1)]}, LambdaContext()) == {"batchItemFailures": []}
        first = mod.container()
        resolver = first.resolver
        assert mod.handler({"Records": [query_record(q2)]}, LambdaContext()) == {"batchItemFailures": []}
        assert mod.container() is first and first.resolver is resolver  # clients reused, not re-created
        assert resolver.stats.requests == 2 and resolver.stats.indexed == 1
        assert mod.operator_handler({"action": "list"}, None)["persons"][0]["faces"] == [q1.face_id, q2.face_id]
    finally:
        mod.container().close()
        mod.container.cache_clear()


def test_settings_come_from_the_environment(aws_stack, monkeypatch):
    container = open_container(monkeypatch, FACE_MATCH_THRESHOLD="90", QUALITY_FILTER="HIGH", MAX_FACES="3",
                               BATCH_CONCURRENCY="4")
    try:
        cfg = container.settings.resolver
        assert (cfg.bucket, cfg.table, cfg.collection_id) == (aws_stack.bucket, aws_stack.table,
                                                              aws_stack.collection_id)
        assert (cfg.face_match_threshold, cfg.quality_filter, cfg.max_faces) == (90.0, "HIGH", 3)
        assert container.settings.concurrency == 4 and container.settings.dlq_url == aws_stack.dlq_url
    finally:
        container.close()


def test_concurrent_batch_resolves_different_things_at_once(aws_stack, monkeypatch):
    # BATCH_CONCURRENCY > 1: things in parallel, each thing's faces still in order.
    # moto's TransactWriteItems is not thread-safe (a 500 now and then under concurrency): more retries.
    container = open_container(monkeypatch, BATCH_CONCURRENCY="4", MAX_ATTEMPTS="5")
    try:
        things = [aws_stack.new_thing() for _ in range(3)]
        photos = ["obama.jpg", "biden.jpg", "solvay_conference_1927.jpg"]
        queries = [face_query(face_crop(p), t) for p, t in zip(photos, things)]
        queries += [face_query(face_crop("obama1.jpg"), things[0])]  # after obama.jpg, on the same thing
        assert handle(container, *map(query_record, queries)) == []
    finally:
        container.close()
    assert aws_stack.rekognition.calls["SearchFacesByImage"] == 4 and aws_stack.rekognition.calls["IndexFaces"] == 3
    assert sorted(len(e["faces"]) for e in persons(aws_stack).values()) == [1, 1, 2]
    assert_consistent(aws_stack)


def test_lambda_logs_are_one_json_shape_with_the_invocation_and_the_record(aws_stack, capsys):
    mod = handler_module()
    mod.container.cache_clear()
    try:
        q = face_query(face_crop("obama.jpg"), aws_stack.thing)
        record, context = query_record(q), LambdaContext()
        assert mod.handler({"Records": [record, sqs_record("{not json")]}, context) == {"batchItemFailures": []}
    finally:
        mod.container().close()
        mod.container.cache_clear()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"level"')]
    by_message = {line["message"]: line for line in lines}
    # The core's structlog event, through powertools' Logger: the invocation's keys, the record's, its own.
    resolved = by_message["face_resolved"]
    assert resolved["function_request_id"] == context.aws_request_id and "cold_start" in resolved
    assert resolved["function_name"] == context.function_name and resolved["service"] == "resolver"
    assert (resolved["message_id"], resolved["face_id"], resolved["thing"]) == (record["messageId"], q.face_id,
                                                                               aws_stack.thing)
    assert resolved["level"] == "INFO" and resolved["location"].startswith("resolve:")  # the core's line
    assert resolved["person_id"].startswith("person-")
    # A key that LogRecord holds itself (`name`: the person's) would make stdlib raise: it is renamed.
    assert mod._to_powertools(None, "info", {"event": "e", "name": "Ada"})["extra"] == {"name_": "Ada"}
    assert by_message["dead_lettered"]["kind"] == "not_json"
    assert by_message["dead_lettered"]["function_request_id"] == context.aws_request_id
