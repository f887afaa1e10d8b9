"""A cheap appearance check: has a tracked face changed since it was last embedded?

SFace costs about 12 ms a face; this costs about 0.1 ms. A named track is embedded again when its face
stops looking like the view that was last embedded and verified (a face replaced in place by another, a
head turned far, the light changed), so SFace runs when something changed, not on a fixed beat.

The signature is the inner face of the aligned crop (eyes to chin, no hair or background), grey, 24x24,
centred and L2-normalised, so the check is a normalised cross-correlation: blind to uniform changes of
brightness and contrast, and low for another face. On the sample clip's tracks, consecutive frames
correlate at a median of 0.98 (5th percentile 0.74) and views of two different tracks at a median of 0.23
(95th percentile 0.66); two different people in the same spot, the tailgating scene, at 0.07.

It is a trigger, never evidence: who a face is, and whether a door opens, rest on SFace embeddings only.
"""

from __future__ import annotations

import cv2
import numpy as np

from facewatchd.vision.alignment import similarity_transform
from facewatchd.vision.detector import Face

SIDE = 24
BROAD_SHADING_SIGMA = 6.0  # px of the 24x24 signature
# The inner face in the 112x112 aligned crop's coordinates (alignment.TEMPLATE puts the eyes at y = 52 and
# the mouth's corners at y = 92), and the map from those coordinates to the signature's pixels.
X0, Y0, X1, Y1 = 16, 16, 96, 104
_TO_SIGNATURE = np.array([[SIDE / (X1 - X0), 0.0], [0.0, SIDE / (Y1 - Y0)]])


def signature(frame: np.ndarray, face: Face) -> np.ndarray:
    """The appearance of a face in a frame, a unit vector. The inner face is warped from the frame straight
    to 24x24 (one small warp, not the 112x112 crop and a resize: it runs for every tracked face, every frame)."""
    aligned = similarity_transform(face.landmarks)
    matrix = _TO_SIGNATURE @ aligned
    matrix[:, 2] -= _TO_SIGNATURE @ np.array([X0, Y0])
    small = cv2.warpAffine(frame, matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    # Without the broad shading (the light's direction, much the same on every face), features remain: on
    # the Solvay photo's frontal faces this tells far more pairs apart at the threshold (test_appearance.py).
    grey = (grey - cv2.GaussianBlur(grey, (SIDE - 1, SIDE - 1), BROAD_SHADING_SIGMA)).ravel()
    grey -= grey.mean()
    norm = float(np.linalg.norm(grey))
    return grey / norm if norm > 1e-6 else grey  # a flat patch: correlates with nothing (0)


def resemblance(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two signatures: 1 the same picture, about 0 unrelated."""
    return float(a @ b)
