"""Outages: the failed message is reported as a batch item failure, nothing half-written stays, and a
redelivery after the outage finishes the job without a second IndexFaces."""

from __future__ import annotations

import socket

import pytest

from tests.support.aws import (
    OutageProxy, assert_consistent, face_crop, face_query, handle, open_container, persons, query_record, sqs_record,
)


@pytest.fixture
def proxied(aws_stack, request, monkeypatch):
    """A handler Container whose `request.param` service goes through an OutageProxy."""
    with OutageProxy(aws_stack.moto_url) as proxy:
        container = open_container(monkeypatch, **{f"AWS_ENDPOINT_URL_{request.param}": proxy.url})
        try:
            yield proxy, container
        finally:
            container.close()


@pytest.mark.parametrize("proxied", ["S3"], indirect=True)
def test_s3_outage_mid_batch(aws_stack, proxied):
    proxy, container = proxied
    obama = query_record(face_query(face_crop("obama.jpg"), aws_stack.thing))
    biden = query_record(face_query(face_crop("biden.jpg"), aws_stack.thing))
    proxy.fail_after(1)  # S3 goes down after the first crop is stored

    assert handle(container, obama, biden) == [biden["messageId"]]

    assert proxy.refused  # the second PutObject met the outage (botocore retried it, then gave up)
    assert aws_stack.rekognition.calls["IndexFaces"] == 1  # the failed message never reached Rekognition
    assert [len(e["faces"]) for e in persons(aws_stack).values()] == [1]
    assert_consistent(aws_stack)

    proxy.heal()
    assert handle(container, biden) == []  # SQS redelivers the failed message
    assert sorted(len(e["faces"]) for e in persons(aws_stack).values()) == [1, 1]
    assert_consistent(aws_stack)


@pytest.mark.parametrize("proxied", ["DYNAMODB"], indirect=True)
def test_dynamodb_outage_while_recording_leaves_nothing_half_written(aws_stack, proxied):
    proxy, container = proxied
    rek = aws_stack.rekognition
    queries = [face_query(face_crop("obama.jpg"), aws_stack.thing), face_query(face_crop("biden.jpg"), aws_stack.thing)]
    records = [query_record(q) for q in queries]
    proxy.fail_when(lambda r: r.op == "TransactWriteItems")  # down exactly when the answer is recorded

    assert handle(container, *records) == [r["messageId"] for r in records]

    assert rek.calls["IndexFaces"] == 2  # both faces were indexed before the write failed
    assert aws_stack.table_items() == []  # ...but no person without a face, no face without a person
    assert aws_stack.desired() == {}  # and no answer was sent for an unrecorded face

    proxy.heal()
    assert handle(container, *records) == []

    assert rek.calls["IndexFaces"] == 2  # the redelivery found the faces indexed the first time
    assert rek.calls["SearchFacesByImage"] == 4
    by_person = persons(aws_stack)
    assert sorted(len(e["faces"]) for e in by_person.values()) == [1, 1]
    for q in queries:
        pid = aws_stack.desired()["faces"][q.face_id]["person_id"]
        assert aws_stack.rekognition.faces_of(aws_stack.collection_id, pid)  # the person is the indexed face's
    assert_consistent(aws_stack)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_whole_backend_down_reports_every_message(aws_stack, monkeypatch):
    down = f"http://127.0.0.1:{_closed_port()}"
    container = open_container(monkeypatch, **{f"AWS_ENDPOINT_URL_{s}": down
                                                for s in ("S3", "DYNAMODB", "SQS", "IOT_DATA_PLANE")})
    try:
        good = query_record(face_query(face_crop("obama.jpg"), aws_stack.thing))
        poison = sqs_record("{not json")  # cannot even be dead-lettered: kept for later
        assert sorted(handle(container, good, poison)) == sorted([good["messageId"], poison["messageId"]])
    finally:
        container.close()
    assert aws_stack.rekognition.calls["SearchFacesByImage"] == 0
    assert aws_stack.table_items() == [] and aws_stack.s3_keys() == []


def test_rekognition_throttling_is_retried_with_backoff(aws_stack, container):
    rek = aws_stack.rekognition
    rek.inject("SearchFacesByImage", "ThrottlingException")
    rek.inject("IndexFaces", "ProvisionedThroughputExceededException")
    q = face_query(face_crop("obama.jpg"), aws_stack.thing)

    assert handle(container, query_record(q)) == []

    assert rek.faults == {"SearchFacesByImage": 1, "IndexFaces": 1}
    assert rek.calls["SearchFacesByImage"] == 2 and rek.calls["IndexFaces"] == 2  # one retry each
    assert [len(e["faces"]) for e in persons(aws_stack).values()] == [1]


def test_throttling_beyond_the_retries_is_a_batch_item_failure(aws_stack, container):
    rek = aws_stack.rekognition
    rek.inject("SearchFacesByImage", "ThrottlingException", times=2)  # MAX_ATTEMPTS=2 in the test env
    record = query_record(face_query(face_crop("obama.jpg"), aws_stack.thing))

    assert handle(container, record) == [record["messageId"]]
    assert aws_stack.table_items() == []
    assert handle(container, record) == []  # the redelivery goes through
    assert rek.calls["IndexFaces"] == 1
