"""CloudWatch metrics in EMF (powertools Metrics), one line per batch on stdout: faces resolved, new
persons, refusals, and every throttled Rekognition attempt, the ones botocore retried included."""

from __future__ import annotations

from tests.support.aws import blank_jpeg, emf_metrics, face_crop, face_query, handle, query_record


def test_a_batch_counts_resolved_new_refused_and_throttled(aws_stack, container, capsys):
    rek, thing = aws_stack.rekognition, aws_stack.thing
    rek.inject("SearchFacesByImage", "ThrottlingException")  # retried by botocore: never seen as an error
    rek.inject("IndexFaces", "ProvisionedThroughputExceededException")
    new = face_query(face_crop("obama.jpg"), thing)
    known = face_query(face_crop("obama1.jpg"), thing)
    no_face = face_query(blank_jpeg(), thing)

    assert handle(container, *map(query_record, [new, known, no_face])) == []

    assert rek.faults == {"SearchFacesByImage": 1, "IndexFaces": 1}
    lines = [line for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(lines) == 1 and '"Namespace":"facewatchd"' in lines[0] and '"service":"resolver"' in lines[0]
    assert emf_metrics(lines[0]) == {"FacesResolved": 2, "NewPersons": 1, "Refusals": 1, "RekognitionThrottles": 2}


def test_throttling_beyond_the_retries_is_counted_and_flushed(aws_stack, container, capsys):
    aws_stack.rekognition.inject("SearchFacesByImage", "ThrottlingException", times=2)  # MAX_ATTEMPTS=2
    record = query_record(face_query(face_crop("obama.jpg"), aws_stack.thing))

    assert handle(container, record) == [record["messageId"]]
    assert emf_metrics(capsys.readouterr().out) == {"RekognitionThrottles": 2}
