"""YuNet on cv2.dnn gives what cv2.FaceDetectorYN gives, without the OpenCV warning FaceDetectorYN.create
prints on every run (it hands the net a target, which OpenCV 5's graph engine does not support)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from facewatchd.vision.models import YUNET, verified_path
from facewatchd.vision.yunet import YuNet
from tests.support.daemon import FIXTURES, ROOT

WARNING = "setPreferableTarget"


def images() -> list[tuple[str, np.ndarray]]:
    found = [(p.name, cv2.imread(str(p))) for p in sorted(FIXTURES.glob("*.jpg"))]
    clip = cv2.VideoCapture(str(ROOT / "samples" / "short_hamilton_clip.mp4"))
    for index in range(0, 270, 15):  # close-ups, the stage, the audience
        clip.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = clip.read()
        assert ok
        found.append((f"clip frame {index}", frame))
    clip.release()
    return found


def test_the_same_faces_as_face_detector_yn() -> None:
    path = str(verified_path(YUNET))
    ours = YuNet(path, 0.7, 0.3)
    reference = cv2.FaceDetectorYN.create(path, "", (320, 320), 0.7, 0.3, 5000)
    total = 0
    for name, image in images():
        h, w = image.shape[:2]
        scale = min(1.0, 640 / max(h, w))
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        reference.setInputSize((small.shape[1], small.shape[0]))
        _, expected = reference.detect(small)
        expected = np.zeros((0, 15), np.float32) if expected is None else expected
        found = ours.detect(small)
        assert found.shape == expected.shape, name
        np.testing.assert_allclose(found, expected, atol=1e-3, err_msg=name)  # same rows, same order
        total += len(found)
    assert total > 40  # the Solvay photo alone has 29 faces


def test_a_run_prints_no_opencv_target_warning(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[[cameras]]\nid = "door"\nsource = "{FIXTURES / "obama2.jpg"}"\n')
    run = subprocess.run([sys.executable, "-m", "facewatchd", "run", "--config", str(config)], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert run.returncode == 0, run.stderr
    assert '"faces": 1' in run.stdout  # it did detect and embed
    assert WARNING not in run.stderr and "[ WARN" not in run.stderr, run.stderr
