"""The liveness models on real pictures, and the two cues no model learnt, on geometry and on rendered attacks."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from bench.attacks import AttackStyle, head_photo, render
from facewatchd.vision.border import framed
from facewatchd.vision.detector import YuNetDetector
from facewatchd.vision.liveness import LivenessConfig, LivenessModel, wide_crop
from facewatchd.vision.models import MODELS_DIR, ModelError
from facewatchd.vision.parallax import nose_parallax
from tests.support.daemon import FIXTURES, SAMPLE_CLIP

SPOOF = FIXTURES / "spoof"


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


@pytest.fixture(scope="module")
def model() -> LivenessModel:
    return LivenessModel()


def largest(detector: YuNetDetector, image: np.ndarray):
    return max(detector.detect(image), key=lambda f: f.box[2] * f.box[3])


def test_the_sample_pictures_verdicts(detector, model):
    # the source's own three pictures: one live person, two attacks (a print and a screen)
    scores = {name: model.score(image, largest(detector, image).box)
              for name in ("image_T1.jpg", "image_F1.jpg", "image_F2.jpg")
              if (image := cv2.imread(str(SPOOF / name))) is not None}
    assert scores["image_T1.jpg"] > 0.9, scores
    assert scores["image_F1.jpg"] < 0.3 and scores["image_F2.jpg"] < 0.05, scores


def test_the_wide_crop_stays_inside_the_image_and_keeps_its_size():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = 255  # the left half white
    crop = wide_crop(image, (0, 0, 40, 40), 2.7)  # a face in the corner: the crop is shifted, not cut
    assert crop.shape == (80, 80, 3)
    assert crop[:, :].mean() > 200  # 108 px wide from x=0: nearly all of it the white half
    whole = wide_crop(image, (80, 30, 40, 40), 4.0)  # larger than the image is high: shrunk to fit
    assert whole.shape == (80, 80, 3)


def test_a_missing_or_wrong_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        LivenessModel(LivenessConfig(models_dir=tmp_path))
    for name in ("2.7_80x80_MiniFASNetV2.onnx", "4_0_0_80x80_MiniFASNetV1SE.onnx"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    (tmp_path / "4_0_0_80x80_MiniFASNetV1SE.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="sha256"):
        LivenessModel(LivenessConfig(models_dir=tmp_path))


def head(points: np.ndarray, yaw_deg: float, pitch_deg: float = 0.0, distance: float = 10.0) -> np.ndarray:
    """Project 3-D face points (inter-ocular distance 1) turned by yaw and pitch through a pinhole camera."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    turned = points @ (rx @ ry).T + [0, 0, distance]
    return 500 * turned[:, :2] / turned[:, 2:] + 320


# right eye, left eye, nose tip (0.6 in front of the eyes' plane), mouth right, mouth left
FACE_3D = np.array([[-0.5, -0.4, 0], [0.5, -0.4, 0], [0, 0.1, -0.6], [-0.4, 0.6, 0], [0.4, 0.6, 0]])


def test_a_flat_picture_shows_no_parallax_however_it_is_turned():
    flat = FACE_3D * [1, 1, 0]  # the same face, printed
    for yaw, pitch in [(0, 0), (25, 0), (0, 20), (-30, 15)]:
        assert nose_parallax(head(flat, 0), head(flat, yaw, pitch)) < 1e-6


def test_a_turning_head_shows_parallax():
    assert nose_parallax(head(FACE_3D, 0), head(FACE_3D, 0)) < 1e-6  # still: nothing to see
    assert nose_parallax(head(FACE_3D, 0), head(FACE_3D, 20)) > 0.15
    assert nose_parallax(head(FACE_3D, 0), head(FACE_3D, 0, 15)) > 0.1
    assert nose_parallax(np.zeros((5, 2)), np.zeros((5, 2))) == 0.0  # degenerate landmarks: no verdict


def test_a_held_print_or_screen_is_framed_and_the_live_clip_never_is(detector):
    photo = cv2.imread(str(FIXTURES / "obama.jpg"))
    picture = head_photo(photo, largest(detector, photo).box)
    for kind in ("print", "screen"):
        frames = list(render([picture], 12, AttackStyle(kind=kind, card_px=240, seed=3)))
        found = sum(framed(f, largest(detector, f).box) for f in frames)
        assert found >= 9, (kind, found)
    assert not framed(photo, largest(detector, photo).box)  # the photo itself, not held up: no frame round it
    clip = cv2.VideoCapture(str(SAMPLE_CLIP))
    faces = 0
    for index in range(0, 275, 5):  # every fifth frame of the live clip, every face in it
        clip.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = clip.read()
        assert ok
        for face in detector.detect(frame):
            faces += 1
            assert not framed(frame, face.box), index
    assert faces > 80
