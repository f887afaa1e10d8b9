"""The daemon's state on disk, as a user meets it: damaged files, two daemons on one directory, and who
may read the faces it keeps."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import FIXTURES, ROOT, Lines, cli


def config_file(tmp_path: Path, source: Path, loop: bool = False) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[logging]\nformat = "json"\n'
                    f'[[cameras]]\nid = "door"\nsource = "{source}"\nloop = {str(loop).lower()}\n')
    return path


def test_a_damaged_cache_is_moved_aside_and_rebuilt(tmp_path):
    cfg = config_file(tmp_path, FIXTURES / "obama.jpg")
    before = json.loads(cli("run", "--config", str(cfg)).stdout)
    cache = tmp_path / "state" / "cache.db"
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: the header survives, the pages do not
    out = cli("run", "--config", str(cfg))
    assert '"state_quarantined"' in out.stderr and "cache.db" in out.stderr
    assert list(cache.parent.glob("cache.db.corrupt-*"))
    after = json.loads(out.stdout)
    # the device asks once more, and the resolver still knows him: the same person, no new one
    assert after["resolver_calls"] == 1 and set(after["persons"]) == set(before["persons"])


@pytest.mark.parametrize("name", ["outbox.db", "shadow.db", "resolver/resolver.db"])
def test_other_damaged_state_is_a_clear_error_naming_the_file(tmp_path, name):
    cfg = config_file(tmp_path, FIXTURES / "obama.jpg")
    cli("run", "--config", str(cfg))
    path = tmp_path / "state" / name
    path.write_bytes(b"this is not an SQLite database, it was overwritten" * 100)
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    out = cli("run", "--config", str(cfg), check=False)
    assert out.returncode == 78, out.stderr[-2000:]  # the units' RestartPreventExitStatus: no crash loop
    assert f"error: {path}: the " in out.stderr and "damaged" in out.stderr and "Traceback" not in out.stderr
    assert path.read_bytes().startswith(b"this is not")  # nothing was silently replaced


def test_a_second_daemon_on_the_same_state_directory_is_refused(tmp_path):
    cfg = config_file(tmp_path, FIXTURES / "obama.jpg", loop=True)
    first = subprocess.Popen([sys.executable, "-m", "facewatchd", "run", "--config", str(cfg)], cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        Lines(first.stderr).until(lambda seen: '"daemon_started"' in seen, timeout=60)
        second = cli("run", "--config", str(cfg), check=False, timeout=60)
        assert second.returncode == 78
        assert f"{tmp_path / 'state'}: already in use by facewatchd (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 0


def test_state_is_private_whatever_the_umask(tmp_path):
    cfg = config_file(tmp_path, FIXTURES / "obama.jpg")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(["sh", "-c", f'umask 022 && exec "{sys.executable}" -m facewatchd run --config "{cfg}"'],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    state = tmp_path / "state"
    paths = [state, *state.rglob("*")]
    assert any(p.suffix == ".jpg" for p in paths) and any(p.name == "cache.db" for p in paths)
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} is {oct(mode)}"
