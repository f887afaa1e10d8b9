"""The `facewatchd faces` commands against the embedded resolver, on real photos."""

import json
from pathlib import Path

from facewatchd.pipeline.cache import FaceCache
from tests.support.daemon import FIXTURES, cli, make_config, run_daemon


def config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n')
    return str(path)


def test_enroll_list_label_forget(tmp_path):
    cfg = config_file(tmp_path)
    out = cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), str(FIXTURES / "obama1.jpg"),
              "--config", cfg)
    assert "from 2 photo(s)" in out.stdout
    persons = json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)
    assert [(p["name"], p["faces"]) for p in persons] == [("Barack Obama", 2)]
    obama = persons[0]["person_id"]

    # the device sees him: cached, and his crop stored by the resolver
    s = run_daemon(make_config(tmp_path / "state", FIXTURES / "obama2.jpg"))
    assert s.persons == {obama: {"name": "Barack Obama", "tracks": 1}}
    crops = list((tmp_path / "state" / "resolver" / "crops").rglob("*.jpg"))
    assert len(crops) == 3  # two enrolment photos and the device's crop

    cli("faces", "label", obama, "Obama", "--config", cfg)
    assert json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)[0]["name"] == "Obama"

    out = cli("faces", "forget", obama, "--config", cfg)
    assert "forgot" in out.stdout
    assert json.loads(cli("faces", "list", "--json", "--config", cfg).stdout) == []
    assert not list((tmp_path / "state" / "resolver" / "crops").rglob("*.jpg"))
    cache = FaceCache(tmp_path / "state" / "cache.db")
    assert obama not in cache.persons()
    cache.close()
    # and the next sighting is a stranger again
    s = run_daemon(make_config(tmp_path / "state", FIXTURES / "obama2.jpg"))
    assert obama not in s.persons and s.resolver_calls == 1


def test_enroll_rejects_photos_without_exactly_one_face(tmp_path):
    cfg = config_file(tmp_path)
    bad = cli("faces", "enroll", "Two", str(FIXTURES / "two_people.jpg"), "--config", cfg, check=False)
    assert bad.returncode == 1 and "expected exactly one face, found 2" in bad.stderr
    (tmp_path / "x.jpg").write_bytes(b"nope")
    bad = cli("faces", "enroll", "X", str(tmp_path / "x.jpg"), "--config", cfg, check=False)
    assert bad.returncode == 1 and "not a readable image" in bad.stderr


def test_enroll_skips_a_face_not_worth_naming(tmp_path):
    """A photo too dark to name anyone from would be a template that names nobody (or anybody): skipped."""
    import cv2
    import numpy as np

    photo = cv2.imread(str(FIXTURES / "obama.jpg"))
    cv2.imwrite(str(tmp_path / "dark.jpg"), np.clip(255 * 0.15 * (photo / 255.0) ** 2.4, 0, 255).astype(np.uint8))
    cfg = config_file(tmp_path)
    bad = cli("faces", "enroll", "Barack Obama", str(tmp_path / "dark.jpg"), "--config", cfg, check=False)
    assert bad.returncode == 1 and "not worth naming (dark" in bad.stderr, bad.stderr
    assert json.loads(cli("faces", "list", "--json", "--config", cfg).stdout) == []
    ok = cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", cfg)
    assert ok.returncode == 0


def test_label_unknown_person_is_an_error(tmp_path):
    bad = cli("faces", "label", "person-nope", "Alice", "--config", config_file(tmp_path), check=False)
    assert bad.returncode == 1 and "no person" in bad.stderr


def test_merge_move_and_reject_change_what_the_device_names(tmp_path):
    """The corrections on the embedded resolver, through the command line, seen by the next runs."""
    cfg = config_file(tmp_path)
    state = tmp_path / "state"
    cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", cfg)
    first = run_daemon(make_config(state, FIXTURES / "biden.jpg"))  # Biden: a new, unnamed person
    [(biden_id, _)] = first.persons.items()
    listed = {p["name"]: p for p in json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)}
    obama_id, [biden_face] = listed["Barack Obama"]["person_id"], listed[None]["face_ids"]

    # merge (a wrong one, on purpose): the device names Biden as Obama at once, from its own cache
    out = cli("faces", "merge", obama_id, biden_id, "--config", cfg)
    assert "1 cached view(s) moved" in out.stdout
    merged = run_daemon(make_config(state, FIXTURES / "biden.jpg"))
    assert merged.persons == {obama_id: {"name": "Barack Obama", "tracks": 1}} and merged.resolver_calls == 0

    # reject: Biden's face is not Obama; his view leaves the device cache and the collection
    out = cli("faces", "reject", biden_face, "--config", cfg)
    assert "1 cached view(s) dropped" in out.stdout
    rejected = run_daemon(make_config(state, FIXTURES / "biden.jpg"))
    assert obama_id not in rejected.persons and rejected.resolver_calls == 1
    [(new_biden, info)] = rejected.persons.items()
    assert info["name"] is None

    # move: Biden's new face filed under Obama (on purpose), then the device names him Obama again
    [new_face] = {p["person_id"]: p for p in json.loads(
        cli("faces", "list", "--json", "--config", cfg).stdout)}[new_biden]["face_ids"]
    out = cli("faces", "move", new_face, obama_id, "--config", cfg)
    assert f"moved face {new_face} to {obama_id}" in out.stdout
    moved = run_daemon(make_config(state, FIXTURES / "biden.jpg"))
    assert moved.persons == {obama_id: {"name": "Barack Obama", "tracks": 1}} and moved.resolver_calls == 0

    bad = cli("faces", "merge", obama_id, obama_id, "--config", cfg, check=False)
    assert bad.returncode == 1 and "itself" in bad.stderr
    bad = cli("faces", "reject", "no-such-face", "--config", cfg, check=False)
    assert bad.returncode == 1 and "no-such-face" in bad.stderr


def test_a_name_another_person_holds_is_refused_with_the_merge_to_make(tmp_path):
    cfg = config_file(tmp_path)
    cli("faces", "enroll", "Alice", str(FIXTURES / "obama.jpg"), "--config", cfg)
    cli("faces", "enroll", "Joe", str(FIXTURES / "biden.jpg"), "--config", cfg)
    ids = {p["name"]: p["person_id"] for p in json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)}
    bad = cli("faces", "label", ids["Joe"], " alice", "--config", cfg, check=False)
    assert bad.returncode == 1
    assert f"'alice' is already {ids['Alice']}: merge {ids['Joe']} into it instead" in bad.stderr
    assert f"(facewatchd faces merge {ids['Alice']} {ids['Joe']})" in bad.stderr and "Traceback" not in bad.stderr
    names = sorted(p["name"] for p in json.loads(cli("faces", "list", "--json", "--config", cfg).stdout))
    assert names == ["Alice", "Joe"]
    assert "is now 'Alice'" in cli("faces", "label", ids["Alice"], "Alice", "--config", cfg).stdout  # its own


def test_enroll_takes_a_batch_skipping_what_cannot_be_enrolled(tmp_path):
    """A user's folder: good photos, a group photo, no face at all, a file that is no image, and a photo of
    someone already known. The good ones are enrolled; the rest are listed at the end with why; exit 2."""
    import cv2
    import numpy as np

    cfg = config_file(tmp_path)
    cli("faces", "enroll", "Joe Biden", str(FIXTURES / "biden.jpg"), "--config", cfg)
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((240, 320, 3), 128, np.uint8))
    junk = tmp_path / "notes.jpg"
    junk.write_bytes(b"not a photo")
    batch = [FIXTURES / "obama.jpg", FIXTURES / "two_people.jpg", wall, junk, FIXTURES / "biden.jpg",
             FIXTURES / "obama1.jpg"]
    out = cli("faces", "enroll", "Barack Obama", *map(str, batch), "--config", cfg, check=False)
    assert out.returncode == 2, out.stderr
    assert "from 2 photo(s)" in out.stdout
    assert "kept 2 of 2 photo(s) as templates (limit 5 per person" in out.stdout
    for i, path in enumerate(batch, 1):  # progress: a line a photo
        assert f"[{i}/6] {path}:" in out.stderr
    report = out.stderr.split("skipped 4 of 6 photo(s):", 1)[1]
    assert f"{FIXTURES / 'two_people.jpg'}: expected exactly one face, found 2" in report
    assert f"{wall}: no face found" in report and f"{junk}: " in report and "not a readable image" in report
    biden = {p["name"]: p["person_id"] for p in json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)}
    assert f"{FIXTURES / 'biden.jpg'}: the face is {biden['Joe Biden']}" in report
    persons = {p["name"]: p for p in json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)}
    assert sorted(persons) == ["Barack Obama", "Joe Biden"] and persons["Joe Biden"]["faces"] == 1

    # the same name again (any case): his photo goes to him, no second "Barack Obama"; one photo, no progress
    out = cli("faces", "enroll", "barack obama", str(FIXTURES / "obama2.jpg"), "--config", cfg)
    assert "who already held the name" in out.stdout and "[1/1]" not in out.stderr
    persons = {p["name"]: p for p in json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)}
    assert sorted(persons) == ["Barack Obama", "Joe Biden"] and persons["Barack Obama"]["faces"] == 3

    # nothing enrollable: exit 1, nothing changed
    bad = cli("faces", "enroll", "Nobody", str(wall), str(junk), "--config", cfg, check=False)
    assert bad.returncode == 1 and "no photo enrolled for 'Nobody'; nothing was changed" in bad.stderr
    assert sorted(p["name"] for p in json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)) == [
        "Barack Obama", "Joe Biden"]


def test_enroll_reports_the_template_limit(tmp_path):
    cfg = config_file(tmp_path)
    (tmp_path / "c.toml").write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
                                     '[resolver]\ntype = "local"\ntemplates_per_person = 2\n')
    photos = [str(FIXTURES / p) for p in ("obama.jpg", "obama1.jpg", "obama2.jpg")]
    out = cli("faces", "enroll", "Barack Obama", *photos, "--config", cfg)
    assert "kept 2 of 3 photo(s) as templates (limit 2 per person;" in out.stdout
    assert "the others are kept as faces only" in out.stdout
    [person] = json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)
    assert (person["faces"], person["templates"]) == (3, 2)


def test_list_shows_sightings_tracks_cameras_and_a_crop_most_seen_first(tmp_path):
    cfg = config_file(tmp_path)
    cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", cfg)  # enrolled, never seen
    run_daemon(make_config(tmp_path / "state", FIXTURES / "biden.jpg"))
    persons = json.loads(cli("faces", "list", "--json", "--config", cfg).stdout)
    assert [p["name"] for p in persons] == [None, "Barack Obama"]  # the one seen first, though made later
    biden, obama = persons
    assert (biden["sightings"], biden["tracks"], obama["sightings"], obama["tracks"]) == (1, 1, 0, None)
    assert biden["cameras"] == [f"{make_config(tmp_path).device.thing}/cam0"] and obama["cameras"] == []
    assert biden["crop"].startswith(str(tmp_path / "state" / "resolver" / "crops")) and Path(biden["crop"]).is_file()
    assert biden["last_seen_local"][:4].isdigit() and biden["possibly"] is None
    text = cli("faces", "list", "--config", cfg).stdout
    assert text.index(biden["person_id"]) < text.index(obama["person_id"])
    assert f"sightings=1 tracks=1 first={biden['first_seen_local']}" in text and f"crop: {biden['crop']}" in text
