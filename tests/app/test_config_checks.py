"""check-config and run refuse what would fail at run time (files that are not there, TLS files that cannot
be read) and warn of what runs but not as meant (camera ids no camera has, a page served in clear)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from facewatchd.app.config import load_config, parse_config
from facewatchd.app.config_checks import check_config
from facewatchd.plugins import PluginHost
from facewatchd.web.auth import hash_password
from tests.support.daemon import FIXTURES, ROOT, SAMPLE_CLIP, cli

HASH = hash_password("correct horse battery")


def findings(data: dict[str, Any]) -> Any:
    config = parse_config(data)
    host = PluginHost(config)
    host.load()  # the plugins' own tables, validated as check-config does
    return check_config(config, host.plugin_configs)


def test_the_default_config_and_sources_that_are_no_files_pass(tmp_path: Path) -> None:
    config = load_config(ROOT / "etc" / "facewatchd.toml")
    assert check_config(config, {}).errors == [] and check_config(config, {}).warnings == []
    live = findings({"cameras": [{"id": "usb", "source": 0}, {"id": "v4l", "source": "/dev/video9"},
                                 {"id": "rtsp", "source": "rtsp://10.0.0.9/stream"},
                                 {"id": "http", "source": "http://10.0.0.9/mjpeg"},
                                 {"id": "dir", "source": str(FIXTURES)}, {"id": "clip", "source": str(SAMPLE_CLIP)}]})
    assert live.errors == [] and live.warnings == []


def test_a_camera_file_or_folder_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    found = findings({"cameras": [{"id": "a", "source": "samples/front_door.mp4"},
                                  {"id": "b", "source": str(tmp_path / "empty")}]})
    assert found.errors == [
        f"cameras[0].source: no such file or directory: samples/front_door.mp4 (relative to the working "
        f"directory, {Path.cwd()})",
        f"cameras[1].source: no images in {tmp_path / 'empty'}"]


def test_tls_files_that_are_missing_are_errors_wherever_they_are(tmp_path: Path) -> None:
    cert = tmp_path / "c.crt"
    cert.write_text("x")
    found = findings({
        "link": {"type": "mqtt", "host": "127.0.0.1", "ca_file": str(tmp_path / "ca.pem"), "cert_file": str(cert),
                 "key_file": str(tmp_path / "c.key")},
        "web": {"password_hash": HASH, "tls_cert_file": str(cert), "tls_key_file": str(tmp_path / "web.key")},
        "plugins": {"homeassistant": {"ca_file": str(tmp_path / "ha-ca.pem")},
                    "door": {"backend": {"type": "mqtt", "command_topic": "door/set", "ca_file": "door-ca.pem"}}}})
    assert found.errors == [
        f"link.ca_file: no such file: {tmp_path / 'ca.pem'}",
        f"link.key_file: no such file: {tmp_path / 'c.key'}",
        f"web.tls_key_file: no such file: {tmp_path / 'web.key'}",
        f"plugins.door.backend.ca_file: no such file: door-ca.pem (relative to the working directory, {Path.cwd()})",
        f"plugins.homeassistant.ca_file: no such file: {tmp_path / 'ha-ca.pem'}"]
    # a page without a password is not served: its TLS files are never opened, as today
    assert findings({"web": {"tls_cert_file": "no.crt", "tls_key_file": "no.key"}}).errors == []


def test_camera_ids_no_camera_has_and_a_page_in_clear_are_warnings() -> None:
    found = findings({"cameras": [{"id": "sample", "source": str(SAMPLE_CLIP)}],
                      "liveness": {"cameras": ["sample", "front"]},
                      "web": {"password_hash": HASH, "host": "0.0.0.0"},
                      "plugins": {"homeassistant": {"cameras": {"sample": {"name": "Hall"},
                                                                "front_door": {"name": "Front door"}}},
                                  "door": {"cameras": ["back"], "backend": {"type": "http",
                                                                            "unlock_url": "http://127.0.0.1/on",
                                                                            "lock_url": "http://127.0.0.1/off"}}}})
    assert found.errors == []
    assert found.warnings[:3] == [
        "liveness.cameras[1]: no camera has the id 'front' (camera ids: sample); it is ignored",
        "plugins.door.cameras[0]: no camera has the id 'back' (camera ids: sample); it is ignored",
        "plugins.homeassistant.cameras.front_door: no camera has the id 'front_door' (camera ids: sample); "
        "it is ignored"]
    assert found.warnings[3].startswith("web.host: '0.0.0.0' serves the review page beyond this machine without TLS")
    assert len(found.warnings) == 4
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert findings({"web": {"password_hash": HASH, "host": host}}).warnings == []
    assert findings({"web": {"host": "0.0.0.0"}}).warnings == []  # no password: no page


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[logging]\nformat = "json"\n' + text)
    return path


def test_check_config_and_run_refuse_it_with_the_same_messages_and_no_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, '[[cameras]]\nid = "sample"\nsource = "samples/front_door.mp4"\n'
                             f'[web]\npassword_hash = "{HASH}"\nhost = "0.0.0.0"\n')
    expected = f"{config}: cameras[0].source: no such file or directory: samples/front_door.mp4"
    check = cli("check-config", "--config", str(config), check=False)
    run = cli("run", "--config", str(config), check=False, timeout=120)
    for proc in (check, run):
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "state").exists()  # refused before anything started

    config.write_text(config.read_text().replace("samples/front_door.mp4", str(SAMPLE_CLIP)))
    check = cli("check-config", "--config", str(config))
    assert f"warning: {config}: web.host: '0.0.0.0' serves the review page" in check.stderr and "ok" in check.stdout


def test_run_refuses_a_missing_password_file_without_a_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, f'[[cameras]]\nid = "sample"\nsource = "{SAMPLE_CLIP}"\n'
                             f'[web]\npassword_file = "{tmp_path / "web-password"}"\n')
    run = cli("run", "--config", str(config), check=False, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert f"web: password_file {tmp_path / 'web-password'}: cannot be read (No such file or directory)" in run.stderr


def test_a_tls_key_this_user_cannot_read_is_an_error() -> None:
    """Under systemd the service's own (dynamic) user must read its keys; as root every file is readable, so
    the check runs as nobody there."""
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)
        key = folder / "client.key"
        key.write_text("secret")
        key.chmod(0o600 if os.geteuid() == 0 else 0o000)
        config = folder / "c.toml"
        config.write_text(f'[link]\ntype = "mqtt"\nhost = "127.0.0.1"\ncert_file = "{key}"\nkey_file = "{key}"\n')
        config.chmod(0o644)
        as_other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        proc = subprocess.run([*as_other, sys.executable, "-m", "facewatchd", "check-config", "--config", str(config)],
                              capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"{config}: link.cert_file: cannot be read by this user: {key}" in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(folder)
