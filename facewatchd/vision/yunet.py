"""YuNet (2023mar) on `cv2.dnn` directly: the pre- and post-processing of OpenCV's `cv2.FaceDetectorYN`
(modules/objdetect/src/face_detect.cpp), here so the net is never handed to `setPreferableBackend/Target`,
which FaceDetectorYN.create always calls and OpenCV 5's graph engine answers with a warning on every run
("setPreferableTarget Targets are not supported by the new graph engine"). The same model, the same rows.
"""

from __future__ import annotations

import cv2
import numpy as np

STRIDES = (8, 16, 32)
DIVISOR = 32  # the input is padded (bottom, right) to a multiple of this
OUTPUTS = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in STRIDES]


class YuNet:
    """`detect(image)` → rows of 15 floats, as FaceDetectorYN gives: x, y, w, h, five landmarks (x, y), score.
    Not thread-safe (one net, one input at a time): vision/detector.py keeps a free list of them."""

    def __init__(self, path: str, score_threshold: float, nms_threshold: float, top_k: int = 5000) -> None:
        self._net = cv2.dnn.readNetFromONNX(path)
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k

    def detect(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        pad_h, pad_w = (h - 1) // DIVISOR * DIVISOR + DIVISOR, (w - 1) // DIVISOR * DIVISOR + DIVISOR
        padded = cv2.copyMakeBorder(image, 0, pad_h - h, 0, pad_w - w, cv2.BORDER_CONSTANT, value=0)
        self._net.setInput(cv2.dnn.blobFromImage(padded))  # BGR, unscaled, no mean: as FaceDetectorYN
        outputs = dict(zip(OUTPUTS, self._net.forward(OUTPUTS)))
        return self._decode(outputs, pad_w)

    def _decode(self, outputs: dict[str, np.ndarray], pad_w: int) -> np.ndarray:
        rows = []
        for stride in STRIDES:
            cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
            score = np.sqrt(cls * obj)
            keep = np.flatnonzero(score >= self.score_threshold)
            if not keep.size:
                continue
            cols = pad_w // stride
            c, r = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
            kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep]
            cx, cy = (c + bbox[:, 0]) * stride, (r + bbox[:, 1]) * stride
            bw, bh = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
            marks = np.empty_like(kps)
            marks[:, 0::2] = (kps[:, 0::2] + c[:, None]) * stride
            marks[:, 1::2] = (kps[:, 1::2] + r[:, None]) * stride
            rows.append(np.column_stack([cx - bw / 2, cy - bh / 2, bw, bh, marks, score[keep]]).astype(np.float32))
        if not rows:
            return np.empty((0, 15), np.float32)
        faces = np.concatenate(rows)
        if len(faces) == 1:
            return faces
        boxes = [(int(x), int(y), int(bw), int(bh)) for x, y, bw, bh in faces[:, :4]]  # as Rect2i: truncated
        kept = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), self.score_threshold, self.nms_threshold,
                                top_k=self.top_k)
        return faces[np.asarray(kept, int).reshape(-1)]
