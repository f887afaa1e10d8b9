"""The alignment every face goes through, and the cheap appearance check built on it, on real photos."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from facewatchd.vision.alignment import align_face
from facewatchd.vision.appearance import resemblance, signature
from facewatchd.vision.detector import Face, YuNetDetector
from facewatchd.vision.models import SFACE, verified_path
from tests.support.faces import face_square, scene

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

def test_the_same_face_resembles_itself_through_noise_light_and_jitter_and_not_another(solvay) -> None:
    """The same face, dimmer and grainy: alike. Detected in 15 frames of a noisy camera, in the full frame and
    in a region (landmarks that jitter by a few pixels): alike. Two of the photo's frontal faces (the same
    light, the same pose): mostly not; two people in the same spot: far from it."""
    image, faces = solvay
    detector = YuNetDetector()
    rng = np.random.default_rng(3)
    noisy = np.clip(image * 0.7 + 30 + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)  # dimmer, grainy
    big = [f for f in faces if f.box[2] >= 40]
    assert min(resemblance(signature(image, f), signature(noisy, f)) for f in big) > 0.95
    others = [resemblance(signature(image, a), signature(image, b)) for a, b in zip(big, big[1:])]
    assert sum(o < 0.7 for o in others) >= 0.75 * len(others), others

    still = scene(face_square("obama2.jpg"))  # 640x480: full frame and regions both at native resolution
    first = detector.detect(still)[0]
    reference, jitter = signature(still, first), []
    x, y, w, h = (int(v) for v in first.box)
    for _ in range(15):
        frame = np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8)
        [full] = detector.detect(frame)
        [region] = detector.detect_in(frame, [(x - w, y - h, x + 2 * w, y + 2 * h)])
        jitter += [resemblance(reference, signature(frame, full)), resemblance(reference, signature(frame, region))]
    assert min(jitter) > 0.75, jitter
    biden = scene(face_square("biden.jpg"))
    assert resemblance(reference, signature(biden, detector.detect(biden)[0])) < 0.4
