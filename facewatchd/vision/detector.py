"""YuNet face detector (`vision/yunet.py`: FaceDetectorYN's processing on cv2.dnn).

Frames are downscaled so the long side is at most `max_side` px (YuNet's sweet spot), and boxes and
landmarks are mapped back to full-frame coordinates. One instance serves every camera from any thread: a
net runs one input at a time, so each call takes one from a free list for its input size (as many as calls
ever ran at once at that size, the detection threads, not one per camera: a 640x360 net is about 20 MB).
"""

from __future__ import annotations

import queue
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
    def __init__(self, config: DetectorConfig | None = None, *, sized: bool = True) -> None:
        """`sized`: keep networks by input size (a camera's frames and the region canvases: a few sizes, each
        run often); False for inputs of every size (crops): networks are then reshaped to each input."""
        self.config = config or DetectorConfig()
        self._sized = sized
        self._path = str(verified_path(YUNET, self.config.model_path))
        # input size (h, w) → its idle networks: a net kept at one size is never reshaped between calls
        self._free: dict[tuple[int, int], queue.SimpleQueue[YuNet]] = {}
        self._unsized: queue.SimpleQueue[YuNet] = queue.SimpleQueue()
        self._unsized.put(self._load())  # the first at once: a model that does not load fails here, not on a frame

    def detect(self, frame: np.ndarray) -> list[Face]:
        _check(frame)
        h, w = frame.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        small = frame if scale == 1.0 else cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        return self._faces(self._run(small), scale, 0, 0)

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
            for face in self._faces(self._run(canvas), scale, x0, y0):
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

    def _load(self) -> YuNet:
        return YuNet(self._path, self.config.score_threshold, self.config.nms_threshold)

    def _run(self, image: np.ndarray) -> np.ndarray:
        free = self._free.setdefault(image.shape[:2], queue.SimpleQueue()) if self._sized else self._unsized
        try:
            net = free.get_nowait()
        except queue.Empty:  # every net of this size is busy on another thread, or none is loaded yet
            try:
                net = self._unsized.get_nowait()
            except queue.Empty:
                net = self._load()
        try:
            return net.detect(image)
        finally:
            free.put(net)

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
