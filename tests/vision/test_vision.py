import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewatchd.vision.detector import DetectorConfig, YuNetDetector
from facewatchd.vision.embedder import SFACE_COSINE_THRESHOLD, EmbedderConfig, SFaceEmbedder, cosine
from facewatchd.vision.models import SFACE, YUNET, ModelError, verified_path

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


@pytest.fixture(scope="module")
def embedder() -> SFaceEmbedder:
    return SFaceEmbedder()


def embed_all(detector, embedder, name):
    image = cv2.imread(str(FIXTURES / name))
    return [embedder.embed(image, f) for f in detector.detect(image)]


def test_models_verify_sha256():
    assert verified_path(YUNET).endswith(YUNET.name)
    assert verified_path(SFACE).endswith(SFACE.name)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        YuNetDetector(DetectorConfig(model_path=tmp_path / "nope.onnx"))


def test_wrong_model_is_a_clear_error(tmp_path):
    wrong = tmp_path / "wrong.onnx"
    shutil.copy(verified_path(YUNET), wrong)
    with wrong.open("ab") as f:
        f.write(b"x")
    with pytest.raises(ModelError, match="sha256"):
        SFaceEmbedder(EmbedderConfig(model_path=wrong))


def test_same_person_matches_and_other_does_not(detector, embedder):
    obama = embed_all(detector, embedder, "obama.jpg")
    obama1 = embed_all(detector, embedder, "obama1.jpg")
    biden = embed_all(detector, embedder, "biden.jpg")
    assert len(obama) == len(obama1) == len(biden) == 1
    assert cosine(obama[0], obama1[0]) > SFACE_COSINE_THRESHOLD
    assert cosine(obama[0], biden[0]) < SFACE_COSINE_THRESHOLD
    assert abs(float(np.linalg.norm(obama[0])) - 1.0) < 1e-5


def test_boxes_map_back_to_full_frame(detector):
    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    faces = detector.detect(image)
    assert len(faces) == 29  # every face in the photo, at the default threshold 0.7
    h, w = image.shape[:2]
    for f in faces:
        x, y, bw, bh = f.box
        assert 0 <= x < w and 0 <= y < h and bw >= 24  # full-frame pixels, not the 640 px detection size


def test_bad_frame_is_rejected(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))
