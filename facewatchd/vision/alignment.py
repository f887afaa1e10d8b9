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
    """Least-squares similarity (rotation, uniform scale, shift) taking src points to dst (Umeyama, as
    OpenCV's alignCrop computes it); a 2x3 matrix for cv2.warpAffine."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    cov = dst_d.T @ src_d / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    rotation = u @ np.diag(d) @ vt
    spread = float(src_d.var(0).sum())
    scale = float(s @ d) / spread if spread > 1e-12 else 1.0  # degenerate landmarks: no scaling
    matrix = np.empty((2, 3), np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(frame: np.ndarray, face: Face) -> np.ndarray:
    """The 112x112 aligned face crop SFace was trained on (what alignCrop returns)."""
    matrix = similarity_transform(face.landmarks)
    return cv2.warpAffine(frame, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR)
