"""`facewatchd faces list|label|enroll|forget` with `[resolver] type = "aws"`: the real command line in a
subprocess, against moto (S3, DynamoDB, IoT shadows) and the Rekognition-compatible server, which
it finds through the standard AWS_ENDPOINT_URL_<SERVICE> variables the `aws_stack` fixture sets."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.aws import FIXTURES, assert_consistent, face_crop, face_query, handle, persons, query_record
from tests.support.daemon import cli


def aws_config(tmp_path: Path, stack, extra: str = "") -> str:
    path = tmp_path / "operator.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n\n'
                    f'[resolver]\ntype = "aws"\nregion = "us-east-1"\nbucket = "{stack.bucket}"\n'
                    f'table = "{stack.table}"\ncollection_id = "{stack.collection_id}"\nmax_attempts = 2\n{extra}')
    return str(path)


def listed(cfg: str) -> list[dict]:
    return json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)


def test_list_label_forget_on_aws(aws_stack, container, tmp_path):
    cfg = aws_config(tmp_path, aws_stack)
    # One man seen by two devices: the first indexes him, the second matches him.
    other_thing = aws_stack.new_thing()
    first = face_query(face_crop("obama.jpg"), aws_stack.thing)
    second = face_query(face_crop("obama1.jpg"), other_thing)
    assert handle(container, query_record(first), query_record(second)) == []

    [row] = listed(cfg)
    person_id = row["person_id"]
    assert row["name"] is None and row["faces"] == 2
    assert sorted(row["things"]) == sorted([aws_stack.thing, other_thing])

    out = cli("faces", "label", person_id, "Barack Obama", "--config", cfg)
    assert "on 2 device(s)" in out.stdout
    for thing in (aws_stack.thing, other_thing):  # the name reaches every device that holds him
        assert aws_stack.desired(thing)["persons"][person_id] == {"name": "Barack Obama"}
    assert persons(aws_stack)[person_id]["profile"]["name"] == "Barack Obama"

    refs = aws_stack.rekognition.faces_of(aws_stack.collection_id, person_id)
    assert len(refs) == 1 and len(aws_stack.s3_keys()) == 2
    out = cli("faces", "forget", person_id, "--config", cfg)
    assert "forgot" in out.stdout and "2 face(s)" in out.stdout
    assert aws_stack.rekognition.faces_of(aws_stack.collection_id, person_id) == []
    assert aws_stack.s3_keys() == [] and aws_stack.table_items() == []
    for thing in (aws_stack.thing, other_thing):  # and every device drops him from its cache
        assert aws_stack.desired(thing)["persons"][person_id]["forget"] is True  # merged into the label


def test_enroll_on_aws_names_the_next_sighting(aws_stack, container, tmp_path):
    cfg = aws_config(tmp_path, aws_stack)
    out = cli("faces", "enroll", "Joe Biden", str(FIXTURES / "biden.jpg"), "--config", cfg)
    assert "from 1 photo(s)" in out.stdout
    [(person_id, entry)] = persons(aws_stack).items()
    assert entry["profile"]["name"] == "Joe Biden" and len(entry["faces"]) == 1 and "things" not in entry["profile"]
    assert aws_stack.rekognition.faces_of(aws_stack.collection_id, person_id)

    # A device's crop of him (from another photo) is named at once, without indexing him again.
    sighting = face_query(face_crop("obama_and_biden.jpg", index=0), aws_stack.thing)  # Biden is on the left
    assert handle(container, query_record(sighting)) == []
    answer = aws_stack.desired()["faces"][sighting.face_id]
    assert (answer["person_id"], answer["name"]) == (person_id, "Joe Biden")
    assert_consistent(aws_stack)


def test_unknown_person_and_unreachable_aws_are_clear_errors(aws_stack, tmp_path, monkeypatch):
    cfg = aws_config(tmp_path, aws_stack)
    bad = cli("faces", "label", "person-nope", "Alice", "--config", cfg, check=False)
    assert bad.returncode == 1 and "no person 'person-nope'" in bad.stderr

    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")  # nothing listens there
    bad = cli("faces", "list", "--config", cfg, check=False)
    assert bad.returncode == 1 and "error: AWS" in bad.stderr and aws_stack.table in bad.stderr
    assert "Traceback" not in bad.stderr


def test_aws_resolver_config_errors_name_the_key(aws_stack, tmp_path):
    cfg = aws_config(tmp_path, aws_stack, extra="face_match_threshold = 101\nbucket_name = \"x\"\n")
    bad = cli("faces", "list", "--config", cfg, check=False)
    assert bad.returncode == 2
    assert f"{cfg}: resolver.face_match_threshold: must be <= 100, got 101" in bad.stderr
    assert f"{cfg}: resolver.bucket_name: unknown key" in bad.stderr
