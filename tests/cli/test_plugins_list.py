"""`facewatchd plugins list` shows what can be turned on, not only what is loaded: the real CLI."""

import json

from facewatchd.plugins import builtin_plugin_names
from tests.support.daemon import cli

BUILTINS = {"alerts", "analytics", "door", "homeassistant", "metrics", "retention"}


def test_the_default_config_lists_every_builtin_off_with_its_section_and_what_it_does():
    assert set(builtin_plugin_names()) == BUILTINS
    out = cli("plugins", "list", "--config", "etc/facewatchd.toml").stdout
    assert "no plugins loaded" not in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("  off ") or line.startswith("  on ")}
    assert set(rows) == {f"[plugins.{name}]" for name in BUILTINS}
    assert all(line.startswith("  off ") for line in rows.values())
    assert "Prometheus metrics" in rows["[plugins.metrics]"] and "Home Assistant" in rows["[plugins.homeassistant]"]
    assert all(len(line.split(None, 2)[2]) > 15 for line in rows.values())  # a line of what each does


def test_enabled_builtins_are_marked_and_their_hooks_listed(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path}"\n[plugins.metrics]\nport = 0\n'
                      '[plugins.retention]\nenabled = false\n')
    out = cli("plugins", "list", "--config", str(config)).stdout
    assert "  on   [plugins.metrics]" in out and "  off  [plugins.retention]" in out
    assert "loaded, and the hooks each implements:" in out and "face_detected" in out
    rows = {r["name"]: r for r in json.loads(cli("plugins", "list", "--json", "--config", str(config)).stdout)}
    assert set(rows) == BUILTINS
    assert [n for n, r in rows.items() if r["enabled"]] == ["metrics"]
    assert rows["metrics"]["section"] == "[plugins.metrics]" and "face_detected" in rows["metrics"]["hooks"]
    assert rows["door"]["hooks"] == [] and rows["door"]["summary"].startswith("Door access control")
