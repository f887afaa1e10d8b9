"""Poison messages go to the DLQ with their reason and are not reported as failures (so SQS does not
retry them); the thing name comes from the topic, never from the payload."""

from __future__ import annotations

import json
import os
import uuid

import cv2
import numpy as np

from facewatchd.messages import MAX_CROP_BYTES, uplink_topic
from tests.support.aws import (
    assert_consistent, b64, blank_jpeg, face_crop, face_query, handle, open_container, persons, query_record,
    rule_body, sqs_record,
)


def _payload(thing: str, jpeg: bytes, **changes: object) -> dict[str, object]:
    body = json.loads(face_query(jpeg, thing).to_json())
    body.update(changes)
    return body


def test_each_poison_kind_lands_in_the_dlq_with_its_reason(aws_stack, container):
    thing, topic = aws_stack.thing, uplink_topic(aws_stack.thing)
    crop = face_crop("obama.jpg")
    png = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    huge = crop + os.urandom(2 * MAX_CROP_BYTES)  # starts like a JPEG; the whole body is over the limit
    corrupt = crop[:200] + os.urandom(4000)  # a JPEG header, then garbage: Rekognition cannot read it
    no_face = face_query(blank_jpeg(), thing)
    unreadable = face_query(corrupt, thing)
    tiny = face_query(face_crop("obama.jpg", face_px=40, margin=0.2), thing)  # 48 px: under Rekognition's 80
    nested = json.dumps({"topic": topic, "x": None})[:-1] + ', "y": ' + "[" * 5000 + "]" * 5000 + "}"
    cases = {
        "not_json": (sqs_record("{not json"), "not JSON"),
        "schema": (sqs_record(rule_body(_payload(thing, crop, face_id="nope"), topic)), "face_id"),
        "no_topic": (sqs_record(json.dumps(_payload(thing, crop))), "topic: missing"),
        "bad_topic": (sqs_record(rule_body(_payload(thing, crop), f"facewatchd/{thing}/faces/known")),
                      "not an uplink topic"),
        "not_jpeg": (sqs_record(rule_body(_payload(thing, crop, crop=b64(png)), topic)), "crop: not a JPEG"),
        "too_large": (sqs_record(rule_body(_payload(thing, crop, crop=b64(huge)), topic)), "body:"),
        "no_face": (query_record(no_face), "no faces in the image"),
        "bad_image": (query_record(unreadable), "InvalidImageFormatException"),
        "too_small": (query_record(tiny), "at least 80 pixels"),
        "nested": (sqs_record(nested), "nested too deeply"),  # a 10 KB body that once failed the whole batch
        "ts_nan": (sqs_record(rule_body(_payload(thing, crop, ts=float("nan")), topic)), "NaN is not JSON"),
        "ts_huge": (sqs_record(rule_body(_payload(thing, crop, ts=1e300), topic)), "ts:"),
    }
    good = face_query(crop, thing)
    records = {name: record for name, (record, _) in cases.items()} | {"good": query_record(good)}

    assert handle(container, *records.values()) == []  # poison is not retried

    letters = {letter["message_id"]: letter for letter in aws_stack.dead_letters(len(cases))}
    assert len(letters) == len(cases)
    expected_kind = {"no_topic": "schema", "bad_topic": "schema", "too_small": "no_face", "nested": "not_json",
                     "ts_nan": "not_json", "ts_huge": "schema"}
    for name, (record, reason) in cases.items():
        letter = letters[record["messageId"]]
        assert letter["kind"] == expected_kind.get(name, name), name
        assert reason in letter["reason"], (name, letter["reason"])
        assert letter["attributes"]["kind"]["StringValue"] == letter["kind"]
        if name == "too_large":  # the DLQ message must stay under SQS's 256 KB
            assert letter["body"] is None and letter["body_truncated"] is True
        else:
            assert letter["body"] == record["body"]  # kept for a replay after a fix
    # Only the good face left a trace: the no-face crops stored before the search were deleted again.
    assert aws_stack.s3_keys() == [f"faces/{thing}/2023/11/14/{good.face_id}.jpg"]
    assert [len(e["faces"]) for e in persons(aws_stack).values()] == [1]
    assert aws_stack.rekognition.calls["IndexFaces"] == 1
    assert_consistent(aws_stack)
    # the device of a face that can never be resolved hears why, and stops resending it
    desired = aws_stack.desired()["faces"]
    for query in (no_face, unreadable, tiny):
        assert set(desired[query.face_id]) == {"unresolvable"}, desired[query.face_id]


def test_a_crop_just_over_the_limit_is_too_large(aws_stack, container):
    crop = face_crop("obama.jpg")
    oversize = crop + b"\0" * (MAX_CROP_BYTES + 1 - len(crop))  # under the body limit, over the crop limit
    record = sqs_record(rule_body(_payload(aws_stack.thing, crop, crop=b64(oversize)), uplink_topic(aws_stack.thing)))
    assert handle(container, record) == []
    [letter] = aws_stack.dead_letters(1)
    assert letter["kind"] == "too_large" and f"more than {MAX_CROP_BYTES}" in letter["reason"]


def test_thing_comes_from_the_topic_never_from_the_payload(aws_stack, container):
    intruder = aws_stack.new_thing()
    payload = _payload(intruder, face_crop("obama.jpg"))  # claims to be another device
    record = sqs_record(rule_body(payload, uplink_topic(aws_stack.thing)))

    assert handle(container, record) == []

    face_id = payload["face_id"]
    assert aws_stack.s3_keys() == [f"faces/{aws_stack.thing}/2023/11/14/{face_id}.jpg"]
    assert face_id in aws_stack.desired()["faces"]
    assert aws_stack.desired(intruder) == {}
    [entry] = persons(aws_stack).values()
    assert entry["profile"]["things"] == {aws_stack.thing}


def test_poison_is_kept_when_the_dlq_is_unreachable(aws_stack, monkeypatch):
    missing = aws_stack.dlq_url.rsplit("/", 1)[0] + f"/no-such-queue-{uuid.uuid4().hex[:6]}"
    container = open_container(monkeypatch, DLQ_URL=missing)
    try:
        record = sqs_record("{not json")
        # Better retried (and moved to the DLQ by the redrive policy) than lost.
        assert handle(container, record) == [record["messageId"]]
    finally:
        container.close()
