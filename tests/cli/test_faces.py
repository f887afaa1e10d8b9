"""The `facewatchd faces` commands against the embedded resolver, on real photos."""

import json

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


def test_label_unknown_person_is_an_error(tmp_path):
    bad = cli("faces", "label", "person-nope", "Alice", "--config", config_file(tmp_path), check=False)
    assert bad.returncode == 1 and "no person" in bad.stderr
