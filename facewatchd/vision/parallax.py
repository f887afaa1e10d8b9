"""A liveness cue that no model learnt: a head is not flat.

The eyes and mouth corners lie nearly in one plane; the nose tip stands out of it. A picture (a print,
a screen) is flat, so between two frames its five landmarks move by one homography: the homography fitted
to the four planar points also carries the nose to where it is seen. A head that turns or nods moves the
nose off that prediction (parallax). `nose_parallax` is that miss, in inter-ocular distances.

What it catches: a still photo however it is moved, turned or tilted. What it misses: a video replay (the
replayed head moves in 3-D inside the screen), a 3-D mask, and a live person who holds perfectly still
(no parallax either: the door waits, it does not deny). Landmarks are YuNet's, a few hundredths of an
inter-ocular distance noisy on a sharp face, more on a small or blurred one: the threshold is measured
in bench/liveness.py.
"""

from __future__ import annotations

import cv2
import numpy as np

PLANAR = [0, 1, 3, 4]  # right eye, left eye, mouth right, mouth left (YuNet's landmark order)
NOSE = 2


def nose_parallax(before: np.ndarray, after: np.ndarray) -> float:
    """How far the nose is from where the planar points' homography puts it, in inter-ocular distances
    of `after`; 0 for a flat picture (up to landmark noise). `before`, `after`: (5, 2) landmarks."""
    a, b = np.asarray(before, np.float64), np.asarray(after, np.float64)
    eyes = float(np.linalg.norm(b[0] - b[1]))
    if eyes < 1.0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    homography = cv2.getPerspectiveTransform(a[PLANAR].astype(np.float32), b[PLANAR].astype(np.float32))
    if not np.isfinite(homography).all():
        return 0.0
    nose = homography @ np.array([a[NOSE, 0], a[NOSE, 1], 1.0])
    if abs(nose[2]) < 1e-9:
        return 0.0
    return float(np.linalg.norm(nose[:2] / nose[2] - b[NOSE]) / eyes)
