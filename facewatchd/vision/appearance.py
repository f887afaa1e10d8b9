"""A cheap appearance check: has a tracked face changed since it was last embedded?

SFace costs about 12 ms a face; this about 0.1 ms. A named track is embedded again when its face stops
looking like the view last embedded and verified (a face replaced in place by another, a head turned far,
the light changed), so SFace runs when something changed, not on a fixed beat.

The signature is the inner face (eyes to chin, no hair or background) warped from the frame by the face's
landmarks to 24x24 grey, without its broad shading (the light's direction, much the same on every face);
two signatures are compared by normalised cross-correlation, the best over shifts of one pixel each way, so
the landmarks' jitter from frame to frame (and between a full-frame and a region detection) does not read as
a change. Figures (tests/vision/test_appearance.py and the calibration in the issue 23 note): the same still
face through sensor noise and detections of both kinds, 0.82 at the least; two different people in the same
spot (the tailgating scene), 0.14; pairs of the Solvay photo's frontal faces, below 0.7 for 87 % of them.

It is a trigger, never evidence: who a face is, and whether a door opens, rest on SFace embeddings only.
"""

from __future__ import annotations

import cv2
import numpy as np

from facewatchd.vision.alignment import similarity_transform
from facewatchd.vision.detector import Face

SIDE = 24
SHIFT = 1  # pixels each way the comparison looks for the best overlap
BROAD_SHADING_SIGMA = 6.0  # px of the 24x24 signature
# The inner face in the 112x112 aligned crop's coordinates (alignment.TEMPLATE puts the eyes at y = 52 and
# the mouth's corners at y = 92), and the map from those coordinates to the signature's pixels.
X0, Y0, X1, Y1 = 16, 16, 96, 104
_TO_SIGNATURE = np.array([[SIDE / (X1 - X0), 0.0], [0.0, SIDE / (Y1 - Y0)]])


def signature(frame: np.ndarray, face: Face) -> np.ndarray:
    """The appearance of a face in a frame: a 24x24 float image. Warped from the frame straight to 24x24 (one
    small warp, not the 112x112 crop and a resize: it runs for every tracked face in every frame)."""
    matrix = _TO_SIGNATURE @ similarity_transform(face.landmarks)
    matrix[:, 2] -= _TO_SIGNATURE @ np.array([X0, Y0])
    small = cv2.warpAffine(frame, matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return grey - cv2.GaussianBlur(grey, (SIDE - 1, SIDE - 1), BROAD_SHADING_SIGMA)


def resemblance(reference: np.ndarray, now: np.ndarray) -> float:
    """How alike two signatures are: 1 the same picture, about 0 unrelated (a flat patch: 0)."""
    core = now[SHIFT:SIDE - SHIFT, SHIFT:SIDE - SHIFT]
    if float(core.std()) < 1e-3 or float(reference.std()) < 1e-3:
        return 0.0
    return float(cv2.matchTemplate(reference, core, cv2.TM_CCOEFF_NORMED).max())
