"""powertools idempotency by SQS message id, over its own DynamoDB table (moto): a redelivered message is
not processed again, and the same message delivered to two invocations at once is resolved once."""

from __future__ import annotations

import asyncio
import json
import threading

from facewatchd.messages import Resolution
from tests.support.aws import face_crop, face_query, handle, open_container, persons, query_record, sqs_record


def test_redelivered_message_is_not_processed_again(aws_stack, container):
    rek, iot = aws_stack.rekognition, aws_stack.client("iot-data")
    q = face_query(face_crop("obama.jpg"), aws_stack.thing)
    record = query_record(q)
    assert handle(container, record) == []
    [(person_id, _)] = persons(aws_stack).items()
    items, keys, calls = aws_stack.table_items(), aws_stack.s3_keys(), rek.calls.copy()
    iot.delete_thing_shadow(thingName=aws_stack.thing)  # shows whether anything answers again

    assert handle(container, record) == []  # SQS delivers the same message again

    assert rek.calls == calls and aws_stack.table_items() == items and aws_stack.s3_keys() == keys
    assert aws_stack.desired() == {}  # not even answered again: the first result stands
    [done] = aws_stack.table_items(aws_stack.idempotency_table)
    assert done["status"] == "COMPLETED" and json.loads(done["data"]) == {"person_id": person_id, "new_person": True}


def test_a_poison_message_redelivered_is_dead_lettered_once(aws_stack, container):
    record = sqs_record("{not json")
    assert handle(container, record) == []
    assert handle(container, record) == []
    assert [letter["message_id"] for letter in aws_stack.dead_letters(2, wait_s=2.0)] == [record["messageId"]]


def test_the_same_message_in_two_invocations_at_once_is_resolved_once(aws_stack, monkeypatch):
    rek = aws_stack.rekognition
    record = query_record(face_query(face_crop("obama.jpg"), aws_stack.thing))
    first, second = open_container(monkeypatch), open_container(monkeypatch)
    started, release = threading.Event(), threading.Event()
    outcome: list[list[str]] = []
    worker = threading.Thread(target=lambda: outcome.append(handle(first, record)))
    try:
        first.run(first.handle_sqs({"Records": []}))  # opens the clients and the resolver
        resolve = first.resolver.resolve

        async def slow_resolve(query):  # the first invocation is still resolving when the second starts
            started.set()
            await asyncio.to_thread(release.wait, 30)
            return await resolve(query)

        monkeypatch.setattr(first.resolver, "resolve", slow_resolve)
        worker.start()
        assert started.wait(30)

        # The second finds the message in progress: a batch item failure, retried by SQS later.
        assert handle(second, record) == [record["messageId"]]
        assert rek.calls["SearchFacesByImage"] == 0

        release.set()
        worker.join(60)
        assert outcome == [[]]
        assert handle(second, record) == []  # the retry finds it done
    finally:
        release.set()
        if worker.is_alive():
            worker.join(60)
        first.close()
        second.close()
    assert rek.calls["SearchFacesByImage"] == 1 and rek.calls["IndexFaces"] == 1
    [entry] = persons(aws_stack).values()
    assert len(rek.faces_of(aws_stack.collection_id, entry["profile"]["person_id"])) == 1


def test_batch_concurrency_is_not_capped_by_the_idempotency_threads(aws_stack, monkeypatch):
    # Each message's work holds an idempotency thread while it runs on the loop: BATCH_CONCURRENCY of
    # them must be there (asyncio's default pool has min(32, CPUs + 4)).
    container = open_container(monkeypatch, BATCH_CONCURRENCY="12")
    running, peak = 0, 0

    async def slow_resolve(query):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.3)
        running -= 1
        return Resolution(query.face_id, "person-0123456789", None, 1.0, new_person=False)

    try:
        container.run(container.handle_sqs({"Records": []}))  # opens the clients and the resolver
        monkeypatch.setattr(container.resolver, "resolve", slow_resolve)
        crop = face_crop("obama.jpg")
        records = [query_record(face_query(crop, f"cam-{i}")) for i in range(12)]  # 12 things: all at once
        assert handle(container, *records) == []
    finally:
        container.close()
    assert peak == 12
