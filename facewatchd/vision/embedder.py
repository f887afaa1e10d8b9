"""SFace embeddings through cv2.FaceRecognizerSF: align the face to 112x112, then a 128-d feature.

Embeddings are returned L2-normalised, so cosine similarity is a dot product (the face cache relies
on that to match a face against thousands of entries with one matrix product).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.vision.detector import Face
from facewatchd.vision.models import SFACE, verified_path

EMBEDDING_DIM = 128
SFACE_COSINE_THRESHOLD = 0.363  # SFace's published same-person threshold


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field("opencv", pattern="^(opencv|torch)$")
    model_path: Path | None = None


def normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class SFaceEmbedder:
    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig()
        self._net = cv2.FaceRecognizerSF.create(verified_path(SFACE, self.config.model_path), "")

    def align(self, frame: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 aligned face crop SFace was trained on."""
        return self._net.alignCrop(frame, face.as_yunet_row())

    def embed_aligned(self, aligned: np.ndarray) -> np.ndarray:
        return normalise(self._net.feature(aligned))

    def embed(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return self.embed_aligned(self.align(frame, face))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(normalise(a), normalise(b)))
