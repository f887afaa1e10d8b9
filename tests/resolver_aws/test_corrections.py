"""The operator's corrections on the AWS resolver (the operator Lambda and the command line): merge two
persons, move a face to another person, reject a face. Against moto (S3, DynamoDB, IoT shadows) and the
Rekognition-compatible server; every change must reach the collection, the records, the crops and every
device's shadow, so the wrong views stop matching everywhere."""

from __future__ import annotations

from typing import Any

from tests.resolver_aws.test_cli import aws_config, listed
from tests.support.aws import assert_consistent, face_crop, face_query, handle, persons, query_record
from tests.support.daemon import cli


def operator(container: Any, **request: Any) -> dict[str, Any]:
    return container.run(container.handle_operator(request))


def test_merge_move_and_reject_reach_collection_records_crops_and_every_device(aws_stack, container, tmp_path):
    rek, door2 = aws_stack.rekognition, aws_stack.new_thing()
    obama = face_query(face_crop("obama.jpg"), aws_stack.thing)
    biden = face_query(face_crop("biden.jpg"), door2)
    biden_again = face_query(face_crop("two_people.jpg", 1), door2)
    assert handle(container, query_record(obama), query_record(biden), query_record(biden_again)) == []
    answers = {**aws_stack.desired()["faces"], **aws_stack.desired(door2)["faces"]}
    obama_id, biden_id = answers[obama.face_id]["person_id"], answers[biden.face_id]["person_id"]
    assert answers[biden_again.face_id]["person_id"] == biden_id != obama_id

    # move: the second Biden sighting was filed under the wrong person (here: on purpose, to Obama)
    moved = operator(container, action="move", face_id=biden_again.face_id, person_id=obama_id)
    assert moved["ok"] and biden_again.face_id in moved["person"]["faces"]
    assert aws_stack.desired(door2)["faces"][biden_again.face_id]["person_id"] == obama_id  # door2 hears of it
    assert biden_again.face_id not in {f["face_id"] for f in persons(aws_stack)[biden_id]["faces"]}

    # merge: Biden was Obama all along (again on purpose): every face, template and device view follows
    merged = operator(container, action="merge", person_id=obama_id, gone=biden_id)
    assert merged["ok"] and sorted(merged["person"]["faces"]) == sorted([obama.face_id, biden.face_id,
                                                                           biden_again.face_id])
    assert biden_id not in persons(aws_stack)
    assert rek.faces_of(aws_stack.collection_id, biden_id) == []  # re-indexed under Obama's id
    assert len(rek.faces_of(aws_stack.collection_id, obama_id)) >= 2
    for thing in (aws_stack.thing, door2):
        assert aws_stack.desired(thing)["persons"][biden_id]["merge_into"] == obama_id
    assert_consistent(aws_stack)
    # a new sighting of Biden is named as the merged person now, with no new person indexed
    sighting = face_query(face_crop("biden.jpg", face_px=140), door2)
    assert handle(container, query_record(sighting)) == []
    assert aws_stack.desired(door2)["faces"][sighting.face_id]["person_id"] == obama_id

    # reject: "not this person" for Biden's first face: template, record and crop go, and devices drop it
    crops_before = len(aws_stack.s3_keys())
    rejected = operator(container, action="reject", face_id=biden.face_id)
    assert rejected["ok"] and biden.face_id not in rejected["person"]["faces"]
    assert len(aws_stack.s3_keys()) == crops_before - 1
    assert aws_stack.desired(door2)["faces"][biden.face_id] == {"reject": True}
    assert all(f["face_id"] != biden.face_id for f in persons(aws_stack)[obama_id]["faces"])
    assert_consistent(aws_stack)

    bad = operator(container, action="reject", face_id="no-such-face")
    assert bad == {"ok": False, "error": "unknown face no-such-face"}
    bad = operator(container, action="merge", person_id=obama_id, gone=obama_id)
    assert not bad["ok"] and "itself" in bad["error"]


def test_corrections_from_the_command_line_on_aws(aws_stack, container, tmp_path):
    cfg = aws_config(tmp_path, aws_stack)
    door2 = aws_stack.new_thing()
    obama = face_query(face_crop("obama.jpg"), aws_stack.thing)
    biden = face_query(face_crop("biden.jpg"), door2)
    assert handle(container, query_record(obama), query_record(biden)) == []
    by_face = {face_id: row["person_id"] for row in listed(cfg) for face_id in row["face_ids"]}
    obama_id, biden_id = by_face[obama.face_id], by_face[biden.face_id]

    out = cli("faces", "merge", obama_id, biden_id, "--config", cfg)
    assert f"merged {biden_id} into {obama_id}" in out.stdout and "on 2 device(s)" in out.stdout
    assert [row["person_id"] for row in listed(cfg)] == [obama_id]
    out = cli("faces", "reject", biden.face_id, "--config", cfg)
    assert f"no longer {obama_id}" in out.stdout
    assert aws_stack.desired(door2)["faces"][biden.face_id] == {"reject": True}
    [row] = listed(cfg)
    assert row["face_ids"] == [obama.face_id]
    bad = cli("faces", "move", "no-such-face", obama_id, "--config", cfg, check=False)
    assert bad.returncode == 1 and "no such person or face 'no-such-face'" in bad.stderr
