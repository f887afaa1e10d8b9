"""`facewatchd run --review`, the first hour: the sample clip plays on and the review page answers until the
daemon is stopped; without a terminal to ask on and no password, it says what to do."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from facewatchd.web.auth import hash_password
from tests.support.broker import free_port
from tests.support.daemon import ROOT, SAMPLE_CLIP


def config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[logging]\nformat = "json"\n'
                    f'[web]\nport = {port}\n[[cameras]]\nid = "sample"\nsource = "{SAMPLE_CLIP}"\n')
    return path


def test_review_keeps_the_clip_playing_and_serves_the_page(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "web-password").write_text(hash_password("first hour") + "\n")
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "facewatchd", "run", "--review", "--config",
                                 str(config(tmp_path, port))], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, stdin=subprocess.DEVNULL)
    try:
        deadline, page = time.monotonic() + 90, None
        while page is None or '"camera_looped"' not in log.read_text():  # the page answers; the clip plays on
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"page {page is not None}, looped: no\n{log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
                    page = r.read().decode()
            except OSError:
                pass
            time.sleep(0.2)
        assert "password" in page.lower()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = log.read_text()
    assert proc.returncode == 0, err[-2000:]
    assert f"review page: http://127.0.0.1:{port}/ (user admin)" in err
    assert '"frames"' in out


def test_review_without_a_password_or_a_terminal_says_how(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "facewatchd", "run", "--review", "--config",
                           str(config(tmp_path, free_port()))], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode != 0
    assert "the review page needs a password" in proc.stderr and "facewatchd web-password" in proc.stderr
    assert "Traceback" not in proc.stderr
