"""The alignment every face goes through, and the cheap appearance check built on it, on real photos."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from facewatchd.vision.alignment import align_face
from facewatchd.vision.appearance import resemblance, signature
from facewatchd.vision.detector import Face, YuNetDetector
from facewatchd.vision.models import SFACE, verified_path

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def solvay() -> tuple[np.ndarray, list]:
    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    return image, YuNetDetector().detect(image)


def test_alignment_is_opencvs_aligncrop(solvay) -> None:
    """The closed-form similarity fit gives the crop FaceRecognizerSF.alignCrop gives (its SVD), for the
    photo's 29 faces and for their mirror images (landmarks of a reflected face: the reflection case)."""
    image, faces = solvay
    reference = cv2.FaceRecognizerSF.create(verified_path(SFACE), "")
    assert len(faces) >= 25
    mirrored = cv2.flip(image, 1)
    for face in faces:
        ours, theirs = align_face(image, face), reference.alignCrop(image, face.as_yunet_row())
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
        # the mirror image's landmarks, in the detector's order (right eye first): a reflected point set
        points = face.landmarks.copy()
        points[:, 0] = image.shape[1] - 1 - points[:, 0]
        flipped = Face(face.box, points[[1, 0, 2, 4, 3]], face.score)
        ours, theirs = align_face(mirrored, flipped), reference.alignCrop(mirrored, flipped.as_yunet_row())
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
        unordered = Face(face.box, points, face.score)  # left and right swapped: a reflection to fit
        ours, theirs = align_face(mirrored, unordered), reference.alignCrop(mirrored, unordered.as_yunet_row())
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1

def test_the_same_face_resembles_itself_through_noise_and_light_and_not_another(solvay) -> None:
    image, faces = solvay
    rng = np.random.default_rng(3)
    noisy = np.clip(image * 0.7 + 30 + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)  # dimmer, grainy
    big = [f for f in faces if f.box[2] >= 40]
    own = [resemblance(signature(image, f), signature(noisy, f)) for f in big]
    others = [resemblance(signature(image, a), signature(image, b))
              for a, b in zip(big, big[1:])]
    assert min(own) > 0.9, own
    assert float(np.median(others)) < 0.6 and sum(o < 0.6 for o in others) >= 0.75 * len(others), others
