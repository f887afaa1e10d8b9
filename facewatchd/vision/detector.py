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
from facewatchd.vision.rects import around, iou, merge
from facewatchd.vision.yunet import YuNet

CANVAS_SIDES = (128, 192, 256, 384, 512, 640)  # the square sizes regions are padded to
REFINE_MARGIN, REFINE_MIN_SIDE, REFINE_IOU = 0.5, 96, 0.3  # a face's native-resolution region, and the match


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
        self._path = str(verified_path(YUNET, self.config.model_path))
        self._net = YuNet(self._path, self.config.score_threshold, self.config.nms_threshold)
        self._squares: dict[int, YuNet] = {}  # one network per region canvas size: no reshaping between calls

    def detect(self, frame: np.ndarray) -> list[Face]:
        _check(frame)
        h, w = frame.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        small = frame if scale == 1.0 else cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        return self._faces(self._net.detect(small), scale, 0, 0)

    def detect_in(self, frame: np.ndarray, regions: list[tuple[int, int, int, int]]) -> list[Face]:
        """Faces in the given regions (x0, y0, x1, y1) of the frame, each cut at native resolution (scaled down
        only past max_side) and padded onto a square of one of a few sizes: a network's input size changes
        cost far more than the padding. A face cut by a region's edge inside the frame is left out: it is
        only part of a face (regions reach well past the faces they are for, pipeline/regions.py)."""
        _check(frame)
        fh, fw = frame.shape[:2]
        faces: list[Face] = []
        for x0, y0, x1, y1 in regions:
            crop = frame[y0:y1, x0:x1]
            if crop.size == 0:
                continue
            scale = min(1.0, self.config.max_side / max(crop.shape[:2]))
            if scale < 1.0:
                crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                                  interpolation=cv2.INTER_AREA)
            side = next((s for s in CANVAS_SIDES if s >= max(crop.shape[:2])), max(crop.shape[:2]))
            canvas = np.zeros((side, side, 3), np.uint8)
            canvas[:crop.shape[0], :crop.shape[1]] = crop
            for face in self._faces(self._square(side).detect(canvas), scale, x0, y0):
                x, y, w, h = face.box
                cut = (x0 > 0 and x <= x0 + 1) or (y0 > 0 and y <= y0 + 1) or (x1 < fw and x + w >= x1 - 1) \
                    or (y1 < fh and y + h >= y1 - 1)
                if not cut:
                    faces.append(face)
        return faces

    def detect_refined(self, frame: np.ndarray) -> list[Face]:
        """The full frame, with each face found there detected again at native resolution around itself when
        the frame is larger than max_side: the landmarks of a face are then those of the region detections
        between full frames (an appearance check compares like with like) and as precise as the camera
        allows (SFace's alignment). A face only the downscale found stays as it was."""
        faces = self.detect(frame)
        h, w = frame.shape[:2]
        if max(h, w) <= self.config.max_side or not faces:
            return faces
        native = self.detect_in(frame, merge([around(f.box, REFINE_MARGIN, REFINE_MIN_SIDE, w, h) for f in faces]))
        return native + [f for f in faces if all(iou(f.box, n.box) < REFINE_IOU for n in native)]

    def _square(self, side: int) -> YuNet:
        net = self._squares.get(side)
        if net is None:
            net = self._squares[side] = YuNet(self._path, self.config.score_threshold, self.config.nms_threshold)
        return net

    def _faces(self, rows: np.ndarray, scale: float, dx: int, dy: int) -> list[Face]:
        faces: list[Face] = []
        for row in rows:
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            if min(bw, bh) < self.config.min_face_px:
                continue
            landmarks = (row[4:14].reshape(5, 2) / scale + np.array([dx, dy], np.float32)).astype(np.float32)
            faces.append(Face((x + dx, y + dy, bw, bh), landmarks, float(row[14])))
        return faces


def _check(frame: np.ndarray) -> None:
    if frame is None or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
        raise ValueError(f"expected a BGR image, got shape {getattr(frame, 'shape', None)}")
