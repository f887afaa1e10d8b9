"""`facewatchd run` fails with an exit status of its own when there is no camera at all (66), or when a camera
never came up (69: a file that cannot be read, a live source with no frame within start_timeout_s): at once
while no camera gives frames, else when the others have ended (they lose nothing). A live source that was up
and goes down is reopened for as long as the daemon runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from facewatchd.exit_codes import ExitCode
from tests.support.daemon import FIXTURES, ROOT, Lines, cli
from tests.support.mjpeg import MjpegCamera


def config(tmp_path: Path, cameras: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[logging]\nformat = "json"\n' + cameras)
    return path


def camera(source: str, **keys: object) -> str:
    return f'[[cameras]]\nid = "door"\nsource = "{source}"\n' + "".join(f"{k} = {v}\n" for k, v in keys.items())


def start(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "facewatchd", "run", "--config", str(path)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_no_camera_at_all_is_a_failure_of_its_own(tmp_path: Path) -> None:
    path = config(tmp_path)
    assert "ok (0 camera(s)" in cli("check-config", "--config", str(path)).stdout  # a resolver's config passes
    proc = cli("run", "--config", str(path), check=False, timeout=120)
    assert proc.returncode == ExitCode.NO_CAMERAS == 66, proc.stderr[-2000:]
    assert f"error: {path}: no [[cameras]] table: facewatchd run needs a camera" in proc.stderr
    assert not (tmp_path / "state").exists()  # refused before anything started


def test_a_camera_file_that_gives_no_frame_fails_the_run(tmp_path: Path) -> None:
    broken = tmp_path / "clip.mp4"
    broken.write_bytes(b"\0" * 1024)  # there (check-config passes it) but no video
    proc = cli("run", "--config", str(config(tmp_path, camera(str(broken)))), check=False, timeout=120)
    assert proc.returncode == ExitCode.CAMERA_NEVER_UP == 69, proc.stderr[-2000:]
    assert "error: camera door: ended without a frame" in proc.stderr and "Traceback" not in proc.stderr
    assert '"camera_never_up"' in proc.stderr and json.loads(proc.stdout)["frames"] == 0


def test_the_other_cameras_go_on_and_the_run_fails_at_its_end(tmp_path: Path) -> None:
    broken = tmp_path / "clip.mp4"
    broken.write_bytes(b"\0" * 1024)
    cameras = camera(str(broken)) + camera(str(FIXTURES / "obama.jpg")).replace('id = "door"', 'id = "hall"')
    proc = cli("run", "--config", str(config(tmp_path, cameras)), check=False, timeout=120)
    assert proc.returncode == 69, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["tracks"] == 1 and summary["pending"] == 0 and len(summary["persons"]) == 1  # hall's face
    assert "error: camera door: ended without a frame" in proc.stderr and "hall" not in proc.stderr.split("error:")[-1]


def test_a_live_camera_with_no_frame_within_its_bound_fails_the_run(tmp_path: Path) -> None:
    down = MjpegCamera(FIXTURES / "obama.jpg")  # never started: its port refuses
    path = config(tmp_path, camera(down.url, reopen_min_s=0.2, reopen_max_s=0.5, start_timeout_s=3))
    proc = cli("run", "--config", str(path), check=False, timeout=120)
    assert proc.returncode == 69, proc.stderr[-2000:]
    assert "error: camera door: no frame within start_timeout_s (3 s)" in proc.stderr
    assert proc.stderr.count('"camera_reopen"') >= 2  # it was retried until the bound, and said so


def test_a_live_camera_that_goes_down_keeps_being_retried(tmp_path: Path) -> None:
    with MjpegCamera(FIXTURES / "obama.jpg") as source:
        proc = start(config(tmp_path, camera(source.url, reopen_min_s=0.2, reopen_max_s=0.5, start_timeout_s=2)))
        try:
            log = Lines(proc.stderr)
            log.until(lambda seen: '"camera_first_frame"' in seen, timeout=120)
            source.stop()
            log.until(lambda seen: '"camera_lost"' in seen and seen.count('"camera_reopen"') >= 8, timeout=60)
            assert proc.poll() is None and '"camera_never_up"' not in log.seen  # well past its bound: still trying
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, log.seen[-2000:]
    assert json.loads(out)["frames"] > 0


def test_a_live_camera_waited_for_for_ever_and_stopped_is_no_failure(tmp_path: Path) -> None:
    down = MjpegCamera(FIXTURES / "obama.jpg")
    proc = start(config(tmp_path, camera(down.url, reopen_min_s=0.2, reopen_max_s=0.3, start_timeout_s=0)))
    try:
        log = Lines(proc.stderr)
        log.until(lambda seen: seen.count('"camera_reopen"') >= 15, timeout=120)  # 0: no bound
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and '"camera_never_up"' not in log.seen, log.seen[-2000:]
