"""The plugin host: a third-party plugin found through its entry point, config errors that name the plugin
and key, and plugins that raise or hang while the frames go on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from facewatchd.app.config import parse_config
from facewatchd.config import ConfigError
from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginHost, builtin_plugin_names
from tests.plugins.support import frames_dir
from tests.support.daemon import FIXTURES, ROOT, cli, make_config, run_daemon

pytestmark = pytest.mark.timeout(120)

THIRD_PARTY = '''
"""A third-party facewatchd plugin: writes one JSON line per face event to a file."""
import json
from pydantic import BaseModel, ConfigDict
from facewatchd.hookspecs import hookimpl


class VisitLogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    min_dwell_s: float = 0.0


class Plugin:
    def __init__(self):
        self.path = None

    @hookimpl
    def facewatchd_config_schema(self):
        return "visitlog", VisitLogConfig

    @hookimpl
    def facewatchd_start(self, context):
        self.path = context.plugin_config("visitlog").path

    def _write(self, **record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\\n")

    @hookimpl
    def face_detected(self, event):
        self._write(hook="face_detected", camera=event.camera, track=event.track_id)

    @hookimpl
    def track_ended(self, event):
        self._write(hook="track_ended", camera=event.face.camera, track=event.face.track_id, frames=event.frames)
'''


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`facewatchd-visitlog` 0.3 as pip would leave it in site-packages: the module and a dist-info whose
    entry_points.txt names it in the group `facewatchd.plugins`."""
    site = tmp_path / "site"
    dist_info = site / "facewatchd_visitlog-0.3.dist-info"
    dist_info.mkdir(parents=True)
    (site / "facewatchd_visitlog.py").write_text(textwrap.dedent(THIRD_PARTY))
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: facewatchd-visitlog\nVersion: 0.3\n")
    (dist_info / "entry_points.txt").write_text("[facewatchd.plugins]\nvisitlog = facewatchd_visitlog\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_third_party_plugin_fires_on_the_real_pipeline_and_is_listed(tmp_path, third_party):
    out = tmp_path / "visits.jsonl"
    config = make_config(tmp_path / "state", FIXTURES / "obama.jpg", plugins={"visitlog": {"path": str(out)}})
    summary = run_daemon(config)
    assert summary.tracks == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["hook"] for line in lines] == ["face_detected", "track_ended"]
    assert lines[0]["camera"] == "cam0" and lines[0]["track"] == lines[1]["track"] and lines[1]["frames"] == 1

    config_file = tmp_path / "facewatchd.toml"
    config_file.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
                           f'[plugins.visitlog]\npath = "{out}"\n[plugins.metrics]\nport = 0\n')
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{third_party}")
    proc = subprocess.run([sys.executable, "-m", "facewatchd", "plugins", "list", "--json", "--config",
                           str(config_file)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed = {p["name"]: p for p in json.loads(proc.stdout)}
    assert listed["visitlog"]["origin"] == "facewatchd-visitlog"
    assert listed["visitlog"]["hooks"] == ["face_detected", "facewatchd_config_schema", "facewatchd_start",
                                           "track_ended"]
    assert listed["metrics"]["origin"] == "builtin" and listed["metrics"]["version"] == "0.1.0"
    text = subprocess.run([sys.executable, "-m", "facewatchd", "plugins", "list", "--config", str(config_file)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120).stdout
    assert "visitlog" in text and "facewatchd-visitlog" in text and "face_detected" in text


def test_third_party_plugin_can_be_disabled(tmp_path, third_party):
    config = parse_config({"plugins": {"visitlog": {"enabled": False}}})
    host = PluginHost(config)
    host.load()
    assert "visitlog" not in host.infos


BAD_SECTIONS = """
[plugins.door]
unlock_threshold = 2
allow = ["A"]
[plugins.door.backend]
type = "http"
lock_url = "http://relay/off"
[plugins.homeassistant]
port = 0
[plugins.alerts]
on_unknown = true
[plugins.metrics]
prot = 9100
[plugins.dorr]
allow = []
"""


def test_bad_plugin_config_names_the_plugin_and_the_key(tmp_path):
    config_file = tmp_path / "facewatchd.toml"
    config_file.write_text(BAD_SECTIONS)
    proc = cli("check-config", "--config", str(config_file), check=False)
    assert proc.returncode == 2
    for expected in ("plugins.door.unlock_threshold: must be <= 1, got 2",
                     "plugins.door.backend.unlock_url: required key is missing",
                     "plugins.homeassistant.port: must be >= 1, got 0",
                     "plugins.alerts: configure at least one channel",
                     "plugins.metrics.prot: unknown key",
                     "plugins.dorr: no such plugin (installed: alerts, analytics, door, homeassistant, metrics"):
        assert f"{config_file}: {expected}" in proc.stderr, proc.stderr


def test_backend_keys_are_named_without_the_union_tag():
    config = parse_config({"plugins": {"door": {"backend": {"type": "gpio", "line": 4, "chip_path": "/dev/x"}}}})
    with pytest.raises(ConfigError, match=r"^plugins\.door\.backend\.chip_path: unknown key$"):
        PluginHost(config).load()


def test_third_party_config_error_names_its_key(tmp_path, third_party):
    config = parse_config({"plugins": {"visitlog": {"path": "x", "min_dwell_s": "long"}}})
    with pytest.raises(ConfigError, match=r"plugins\.visitlog\.min_dwell_s: .*got 'long'"):
        PluginHost(config).load()


def test_builtins_ship_a_manifest_that_documents_every_key():
    import tomllib

    from plugins.alerts import AlertsConfig
    from plugins.analytics import AnalyticsConfig
    from plugins.door import DoorConfig
    from plugins.homeassistant import HomeAssistantConfig
    from plugins.metrics import MetricsConfig
    from plugins.retention import RetentionConfig

    models = {"alerts": AlertsConfig, "analytics": AnalyticsConfig, "door": DoorConfig,
              "homeassistant": HomeAssistantConfig, "metrics": MetricsConfig, "retention": RetentionConfig}
    assert builtin_plugin_names() == sorted(models)
    for name, model in models.items():
        manifest = tomllib.loads((ROOT / "plugins" / name / "manifest.toml").read_text())
        assert manifest["name"] == name and manifest["version"] and manifest["description"]
        assert isinstance(manifest["requirements"], list)
        assert set(manifest["config"]) == set(model.model_fields), name


class Raises:
    @hookimpl
    def face_detected(self, event: Any) -> None:
        raise RuntimeError("plugin bug")


class HangsAsync:
    @hookimpl
    async def face_recognised(self, event: Any) -> None:
        await asyncio.sleep(3600)


class HangsInThread:
    """A plain hook stuck in blocking I/O; it can't be cancelled, only abandoned (it ends by itself later)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    @hookimpl
    def track_ended(self, event: Any) -> None:
        self.release.wait(30)


def test_plugins_that_raise_or_hang_do_not_stop_frames(tmp_path, enrolled):
    # 12 frames a visit: a named track is re-verified at its 11th frame, so face_recognised fires twice
    frames = frames_dir(tmp_path / "frames", (FIXTURES / "obama2.jpg", 12), ("blank", 1),
                        (enrolled.stranger, 12), ("blank", 1), (FIXTURES / "biden.jpg", 12))
    plain = run_daemon(make_config(enrolled.state(tmp_path / "a"), frames))

    config = make_config(enrolled.state(tmp_path / "b"), frames)
    host = PluginHost(config, hook_timeout_s=0.3)
    hangs = HangsInThread()
    for name, plugin in (("raises", Raises()), ("hangs-async", HangsAsync()), ("hangs-thread", hangs)):
        host.register(name, plugin, "test")
    troubled = run_daemon(config, host)
    stuck = [t for t in threading.enumerate() if t.name == "plugin-hangs-thread"]
    assert stuck and stuck[0].is_alive()  # the run ended while that hook was still stuck: nobody waited
    hangs.release.set()
    assert troubled.frames == plain.frames == 38 and troubled.frames_dropped == 0
    assert (troubled.tracks, troubled.faces, troubled.persons) == (plain.tracks, plain.faces, plain.persons)
    assert host.failures["raises"] == troubled.tracks == 3  # every face_detected raised, and was logged
    assert host.failures["hangs-async"] >= 3 and host.failures["hangs-thread"] == 3


def test_builtin_without_its_package_says_which_package(monkeypatch):
    for module in ("plugins.homeassistant", "plugins._mqtt"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "aiomqtt", None)  # as if the mqtt extra were not installed
    config = parse_config({"plugins": {"homeassistant": {}}})
    with pytest.raises(ConfigError, match=r"plugins\.homeassistant: needs the Python package 'aiomqtt'"):
        PluginHost(config).load()
