"""A track's candidate views: what the recognizer would embed, send or learn, and whether it is worth it.

A view's `rank` picks a track's best view among its first frames (size, detector score, sharpness: cheap,
no embedding). Whether a view may become a person, a template or a cached view is the quality gate's
(vision/quality.py), decided once the view is embedded: the gate needs SFace's feature norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facewatchd.vision.detector import Face
from facewatchd.vision.quality import FaceQuality, QualityConfig, measure


@dataclass(slots=True)
class View:
    """One candidate view of a track: what we would embed and send if it turns out to be the best."""

    rank: float
    aligned: np.ndarray  # 112x112 SFace input
    crop: np.ndarray  # face with margin, for the uplink JPEG
    face: Face
    ts: float
    appearance: np.ndarray | None = None  # vision/appearance.py: what later frames are compared with
    embedding: np.ndarray | None = None
    norm: float | None = None  # SFace's feature norm, with the embedding
    jpeg: bytes | None = None  # encoded once, on first use
    _quality: FaceQuality | None = None

    def embedded(self, embedding: np.ndarray, norm: float) -> None:
        self.embedding, self.norm = embedding, norm

    def quality(self) -> FaceQuality:
        """The gate's measures (the view must be embedded: the norm comes with the embedding)."""
        if self._quality is None:
            assert self.norm is not None, "a view is measured once embedded"
            self._quality = measure(self.face, self.aligned, self.norm)
        return self._quality

    @property
    def checked(self) -> bool:
        return self._quality is not None

    def failures(self, gate: QualityConfig) -> list[str]:
        """Why this view is not worth naming (empty: it is)."""
        return gate.failures(self.quality())


def size_score(face: Face) -> float:
    return min(1.0, (face.box[2] * face.box[3]) / (112.0 * 112.0))


def sharpness(aligned: np.ndarray) -> float:
    gray = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    return min(1.0, float(cv2.Laplacian(gray, cv2.CV_64F).var()) / 300.0)


def rank(face: Face, aligned: np.ndarray) -> float:
    """How good a view looks before it is embedded: the best-of-frames choice."""
    return face.score * size_score(face) * (0.25 + 0.75 * sharpness(aligned))
