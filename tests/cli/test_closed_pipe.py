"""A command whose reader went away (`facewatchd faces list | head -3`) exits quietly: the real CLI in a
subprocess, its stdout a pipe nobody reads."""

import os
import subprocess
import sys

from facewatchd.closed_pipe import EXIT_CLOSED_PIPE
from tests.support.daemon import FIXTURES, ROOT, cli


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # before the command starts: every write it makes meets a closed pipe, every time
    try:
        return subprocess.run([sys.executable, "-m", "facewatchd", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    finally:
        os.close(write_end)


def test_faces_list_into_a_closed_pipe_exits_quietly(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n')
    cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", str(config))
    for args in (("faces", "list"), ("faces", "list", "--json")):
        proc = run_into_closed_pipe(*args, "--config", str(config))
        assert proc.returncode == EXIT_CLOSED_PIPE, proc.stderr
        assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert "Exception ignored" not in proc.stderr, proc.stderr


def test_faces_list_into_head_prints_its_lines(tmp_path):
    """Through a real shell pipe, as a user types it: what head keeps is there, and no traceback."""
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n')
    cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", str(config))
    cli("faces", "enroll", "Joe Biden", str(FIXTURES / "biden.jpg"), "--config", str(config))
    proc = subprocess.run(f"{sys.executable} -m facewatchd faces list --config {config} | head -1", shell=True,
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          timeout=300)
    assert len(proc.stdout.splitlines()) == 1 and "person-" in proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
