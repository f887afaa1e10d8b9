"""The face quality gate on real faces: a clear photo passes; the same photo darkened, blurred, shrunk,
or a profile, fails for the reason it shows."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from facewatchd.vision.detector import DetectorConfig, Face, YuNetDetector
from facewatchd.vision.embedder import SFaceEmbedder
from facewatchd.vision.quality import QualityConfig, measure, yaw
from tests.support.daemon import FIXTURES

GATE = QualityConfig()


@pytest.fixture(scope="module")
def models() -> tuple[YuNetDetector, SFaceEmbedder]:
    return YuNetDetector(DetectorConfig(min_face_px=8)), SFaceEmbedder()


def failures(models: tuple[YuNetDetector, SFaceEmbedder], image: np.ndarray) -> list[str]:
    detector, embedder = models
    face = max(detector.detect(image), key=lambda f: f.box[2] * f.box[3])
    aligned = embedder.align(image, face)
    _, norms = embedder.embed_batch_with_norms([aligned])
    return GATE.failures(measure(face, aligned, float(norms[0])))


def test_a_clear_face_passes_and_each_degradation_fails_for_its_reason(models) -> None:
    photo = cv2.imread(str(FIXTURES / "obama.jpg"))
    assert failures(models, photo) == []
    dark = np.clip(255 * 0.15 * (photo / 255.0) ** 2.4, 0, 255).astype(np.uint8)
    assert "dark" in failures(models, dark)
    side = max(f.box[3] for f in models[0].detect(photo))
    blurred = cv2.GaussianBlur(photo, (0, 0), 4 * side / 112)  # 4 px of blur on the 112 px face SFace sees
    assert {"blurred", "unreadable"} & set(failures(models, blurred))
    small = cv2.resize(photo, None, fx=24 / side, fy=24 / side, interpolation=cv2.INTER_AREA)
    assert "small" in failures(models, small)


def test_yaw_is_zero_for_a_frontal_face_and_beyond_one_for_a_profile() -> None:
    frontal = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
    assert yaw(frontal) < 0.05
    profile = frontal.copy()
    profile[1] = [50.0, 51.5]  # the far eye hidden behind the nose: eyes close together, nose outside them
    profile[2] = [30.0, 71.7]
    assert yaw(profile) > GATE.max_yaw
    assert yaw(np.tile([[10.0, 10.0]], (5, 1))) == 1.0  # degenerate landmarks are not frontal


def test_the_gate_off_passes_everything_and_bad_settings_are_refused() -> None:
    face = Face((0, 0, 10, 10), np.zeros((5, 2)), 0.1)
    quality = measure(face, np.zeros((112, 112, 3), np.uint8), 1.0)
    assert len(GATE.failures(quality)) >= 5
    assert QualityConfig(enabled=False).failures(quality) == []
    for bad in ({"min_brightness": 300}, {"max_yaw": 0}, {"min_score": 2}, {"speed": 1}):
        with pytest.raises(ValidationError):
            QualityConfig(**bad)
