"""Still-image face analysis: find the faces in a photo or crop and embed them.

Used where there is no video track: enrolling from photos, the local resolver when a request carries
no embedding, and test servers. Thread-safe (one lock), so it can be called from a thread pool.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from facewatchd.vision.detector import DetectorConfig, Face, YuNetDetector
from facewatchd.vision.embedder import EmbedderConfig, SFaceEmbedder


class ImageError(ValueError):
    """Bytes that are not a decodable image."""


@dataclass(frozen=True, slots=True)
class AnalysedFace:
    face: Face
    embedding: np.ndarray


def decode_image(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ImageError("not a decodable image")
    return image


class FaceAnalyzer:
    def __init__(self, detector: DetectorConfig | None = None, embedder: EmbedderConfig | None = None,
                 embedder_instance: SFaceEmbedder | None = None) -> None:
        # Crops are small and tight: a lower score threshold and min size than the video detector.
        cfg = (detector or DetectorConfig()).model_copy(update={"min_face_px": 12})
        self._detector = YuNetDetector(cfg)
        self._embedder = embedder_instance or SFaceEmbedder(embedder)
        self._lock = threading.Lock()

    def faces(self, image: np.ndarray) -> list[AnalysedFace]:
        """All faces, largest first."""
        with self._lock:
            found = sorted(self._detector.detect(image), key=lambda f: f.box[2] * f.box[3], reverse=True)
            return [AnalysedFace(f, self._embedder.embed(image, f)) for f in found]

    def largest(self, image: np.ndarray) -> AnalysedFace | None:
        found = self.faces(image)
        return found[0] if found else None
