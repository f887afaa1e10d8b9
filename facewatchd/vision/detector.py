"""YuNet face detector (`vision/yunet.py`: FaceDetectorYN's processing on cv2.dnn).

Frames are downscaled so the long side is at most `max_side` px (YuNet's sweet spot), and boxes and
landmarks are mapped back to full-frame coordinates. One instance per camera: the net is not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.vision.models import YUNET, verified_path
from facewatchd.vision.yunet import YuNet


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field("yunet", pattern="^yunet$")
    model_path: Path | None = None
    score_threshold: float = Field(0.7, gt=0, lt=1)
    nms_threshold: float = Field(0.3, gt=0, lt=1)
    min_face_px: int = Field(24, ge=8, description="smallest face side, in full-frame pixels")
    max_side: int = Field(640, ge=160, le=4096, description="long side the frame is scaled to for detection")


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face in full-frame pixel coordinates."""

    box: tuple[float, float, float, float]  # x, y, w, h
    landmarks: np.ndarray  # (5, 2): right eye, left eye, nose tip, mouth right, mouth left
    score: float

    def as_yunet_row(self) -> np.ndarray:
        """The 15-float row layout that FaceRecognizerSF.alignCrop expects."""
        return np.concatenate([np.asarray(self.box, np.float32), self.landmarks.reshape(-1).astype(np.float32),
                               np.asarray([self.score], np.float32)])


class YuNetDetector:
    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        path = verified_path(YUNET, self.config.model_path)
        self._net = YuNet(str(path), self.config.score_threshold, self.config.nms_threshold)

    def detect(self, frame: np.ndarray) -> list[Face]:
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
            raise ValueError(f"expected a BGR image, got shape {getattr(frame, 'shape', None)}")
        h, w = frame.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        small = frame if scale == 1.0 else cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        faces: list[Face] = []
        for row in self._net.detect(small):
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            if min(bw, bh) < self.config.min_face_px:
                continue
            faces.append(Face((x, y, bw, bh), (row[4:14].reshape(5, 2) / scale).astype(np.float32), float(row[14])))
        return faces
