from pathlib import Path

import pytest

from facewatchd.app.config import load_config, parse_config
from facewatchd.config import ConfigError
from tests.support.daemon import ROOT, cli


def test_default_config_is_valid():
    config = load_config(ROOT / "etc" / "facewatchd.toml")
    assert config.cameras[0].source == "samples/short_hamilton_clip.mp4"
    assert config.link.type == "local" and config.resolver.type == "local"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return p


def test_error_names_file_key_and_problem(tmp_path):
    p = write(tmp_path, '[[cameras]]\nid = "a"\nsource = "x.mp4"\nfps = -1\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: cameras[0].fps: must be > 0, got -1"


def test_unknown_keys_are_errors(tmp_path):
    p = write(tmp_path, "[cache]\nmatch_treshold = 0.5\n")
    with pytest.raises(ConfigError, match=r"cache.match_treshold: unknown key"):
        load_config(p)


def test_wrong_types_and_ranges(tmp_path):
    p = write(tmp_path, '[detector]\nscore_threshold = "high"\n[tracker]\nmax_missed = -3\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    text = str(e.value)
    assert "detector.score_threshold" in text and "tracker.max_missed: must be >= 0, got -3" in text


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[cache\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_link_type_selects_its_schema():
    with pytest.raises(ConfigError, match="link"):
        parse_config({"link": {"type": "carrier-pigeon"}})
    with pytest.raises(ConfigError, match=r"link.hots: unknown key"):
        parse_config({"link": {"type": "mqtt", "host": "x", "hots": "y"}})


def test_duplicate_camera_ids():
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({"cameras": [{"id": "a", "source": 0}, {"id": "a", "source": 1}]})


def test_check_config_command(tmp_path):
    ok = cli("check-config", "--config", str(ROOT / "etc" / "facewatchd.toml"))
    assert "ok" in ok.stdout
    bad = cli("check-config", "--config", str(write(tmp_path, '[[cameras]]\nid="a"\nsource="x"\nfps=-1\n')),
              check=False)
    assert bad.returncode != 0
    assert "cameras[0].fps: must be > 0, got -1" in bad.stderr


def test_non_utf8_and_deeply_nested_toml_are_config_errors(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[device]\nthing = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text \(byte 21\)"):
        load_config(latin1)
    nested = tmp_path / "nested.toml"
    nested.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested.toml: not valid TOML: nested too deeply"):
        load_config(nested)
    nested.write_text("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    with pytest.raises(ConfigError, match="nested.toml: not valid TOML"):
        load_config(nested)
    out = cli("check-config", "--config", str(nested), check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_a_password_file_or_hash_that_cannot_work_is_a_config_error(tmp_path):
    """Caught by check-config, not as a traceback at start (a missing file) or as a page where every login
    fails (a password written where its hash belongs); the value itself is never echoed."""
    from facewatchd.web.auth import hash_password

    for web, expected in [({"password_hash": "hunter2"}, "web: password_hash does not hold a password hash"),
                          ({"password_file": str(tmp_path / "missing")}, "cannot be read"),
                          ({"password_file": str(write(tmp_path, ""))}, "is empty")]:
        with pytest.raises(ConfigError, match=expected) as caught:
            parse_config({"web": web})
        assert "hunter2" not in str(caught.value)
    holds_password = tmp_path / "pw"
    holds_password.write_text("hunter2\n")
    with pytest.raises(ConfigError, match=f"password_file {holds_password} does not hold a password hash"):
        parse_config({"web": {"password_file": str(holds_password)}})
    holds_hash = tmp_path / "hash"
    holds_hash.write_text(hash_password("correct horse") + "\n")
    assert parse_config({"web": {"password_file": str(holds_hash)}}).web.enabled
    proc = cli("check-config", "--config", str(write(tmp_path, f'[web]\npassword_file = "{tmp_path / "nope"}"\n')),
               check=False)
    assert proc.returncode == 2 and "cannot be read" in proc.stderr and "Traceback" not in proc.stderr


def test_an_infinite_or_nan_number_is_refused():
    for fps in (float("inf"), float("nan")):
        with pytest.raises(ConfigError, match=r"cameras\[0\]\.fps"):
            parse_config({"cameras": [{"id": "a", "source": "x.mp4", "fps": fps}]})
    with pytest.raises(ConfigError, match=r"identity\.name_threshold"):
        parse_config({"identity": {"name_threshold": float("nan")}})


def test_messages_read_like_the_rest_without_pydantic_wording(tmp_path):
    """Every line reads `key.path: what is wrong[, got value]`: no "Value error, " or "Input should be", a
    duplicate camera id is named under `cameras`, and `[cameras]` for `[[cameras]]` gets the hint."""
    cases = [
        ('[[cameras]]\nid = "sample"\nsource = "a.mp4"\n[[cameras]]\nid = "sample"\nsource = "b.mp4"\n',
         "cameras: each camera's id must be unique, repeated: sample"),
        ("[identity]\nnew_below = 0.9\n",
         "identity: new_below <= name_threshold <= learn_threshold must hold, got 0.9, 0.5, 0.55"),
        ('[cameras]\nid = "sample"\nsource = "a.mp4"\n',
         "cameras: must be a list: write [[cameras]] (double brackets) for each entry, not [cameras]"),
        ('[[cameras]]\nid = "a"\nsource = "a.mp4"\npace = "slow"\n', "cameras[0].pace: must be 'asap' or 'realtime', "
                                                                     "got 'slow'"),
        ("[device]\nworkers = 1.5\n", "device.workers: must be a whole number, got 1.5"),
        ('[web]\ntls_cert_file = "a.crt"\n', "web: tls_cert_file and tls_key_file go together"),
    ]
    for text, expected in cases:
        p = write(tmp_path, text)
        with pytest.raises(ConfigError) as e:
            load_config(p)
        assert str(e.value) == f"{p}: {expected}"
    proc = cli("check-config", "--config", str(write(tmp_path, cases[0][0] + cases[1][0])), check=False)
    assert proc.returncode == 2
    assert "Value error" not in proc.stderr and "Input should" not in proc.stderr and "(top level)" not in proc.stderr


def test_the_double_bracket_hint_names_a_plugin_s_table_in_full():
    from facewatchd.plugins import PluginHost

    config = parse_config({"plugins": {"door": {"schedule": {"days": ["mon"], "start": "08:00", "end": "18:00"},
                                                "backend": {"type": "http", "unlock_url": "http://relay/on",
                                                            "lock_url": "http://relay/off"}}}})
    with pytest.raises(ConfigError) as e:
        PluginHost(config).load()
    assert str(e.value) == ("plugins.door.schedule: must be a list: write [[plugins.door.schedule]] (double brackets) "
                            "for each entry, not [plugins.door.schedule]")
