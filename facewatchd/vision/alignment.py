"""Face alignment for SFace: the 112x112 crop it was trained on, as OpenCV's FaceRecognizerSF.alignCrop
makes it (the same 5-point template and similarity fit), without loading a network just to warp an image.
"""

from __future__ import annotations

import cv2
import numpy as np

from facewatchd.vision.detector import Face

ALIGNED_SIZE = 112
# The 5-point template FaceRecognizerSF.alignCrop maps landmarks onto (right eye, left eye, nose, mouth).
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]], np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray = TEMPLATE) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking src points to dst, as OpenCV's
    alignCrop computes it (Umeyama); a 2x3 matrix for cv2.warpAffine. In two dimensions the optimum has a
    closed form, [[a, -b], [b, a]] from dot and cross products of the centred points. Written on floats, not
    arrays: it runs for every tracked face in every frame (the appearance check), and an SVD of a 2x2 matrix
    through numpy costs 25 times as much."""
    pts = np.asarray(src, np.float64).reshape(-1, 2).tolist()
    ref = np.asarray(dst, np.float64).reshape(-1, 2).tolist()
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    ux, uy = sum(q[0] for q in ref) / n, sum(q[1] for q in ref) / n
    spread = dot = cross = 0.0
    for (x, y), (u, v) in zip(pts, ref):
        x, y, u, v = x - mx, y - my, u - ux, v - uy
        spread += x * x + y * y
        dot += x * u + y * v
        cross += x * v - y * u
    a, b = (dot / spread, cross / spread) if spread > 1e-12 else (1.0, 0.0)  # degenerate: no scaling
    return np.array([[a, -b, ux - a * mx + b * my], [b, a, uy - b * mx - a * my]])


def align_face(frame: np.ndarray, face: Face) -> np.ndarray:
    """The 112x112 aligned face crop SFace was trained on (what alignCrop returns)."""
    matrix = similarity_transform(face.landmarks)
    return cv2.warpAffine(frame, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR)
