"""Presentation-attack detection: is this face a live person, or a photo or a screen held up to the camera?

Two MiniFASNet models (minivision-ai's Silent-Face-Anti-Spoofing, Apache-2.0) through cv2.dnn, each on a
wide crop around the face (2.7 and 4.0 times the box: the card's edge, the screen's bezel, the hand are
the point), their live probabilities averaged. A score per face view, 0 (attack) to 1 (live); what a
score means for a door is the door's policy (plugins/door/liveness.py), not this module's.

The models were trained on their authors' own data; a 3-D mask or a good screen may pass them, which is
why the door also asks for a cue no model learnt (facewatchd/vision/parallax.py).
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.vision.models import LIVENESS_V1SE, LIVENESS_V2, ModelFile, verified_path

INPUT_SIZE = 80
LIVE_CLASS = 1  # softmax index of a live face; 0 and 2 are the two kinds of attack


class LivenessConfig(BaseModel):
    """[liveness]: the models, and cameras checked beyond what a door asks for."""

    model_config = ConfigDict(extra="forbid")

    models_dir: Path | None = Field(None, description="folder holding both ONNX files; default: the bundled ones")
    cameras: list[str] = Field(default_factory=list, description="cameras whose every recognised track is "
                               "checked, door or not (the door asks for its own cameras and allowlist itself)")


class LivenessModel:
    """Both networks; thread-safe (one lock: a cv2.dnn network is not)."""

    MODELS: tuple[tuple[ModelFile, float], ...] = ((LIVENESS_V2, 2.7), (LIVENESS_V1SE, 4.0))

    def __init__(self, config: LivenessConfig | None = None) -> None:
        folder = (config or LivenessConfig()).models_dir
        self._nets = []
        for model, scale in self.MODELS:
            path = verified_path(model, None if folder is None else Path(folder) / model.name)
            self._nets.append((cv2.dnn.readNetFromONNX(path), scale))
        self._lock = threading.Lock()

    def score(self, image: np.ndarray, box: tuple[float, float, float, float]) -> float:
        """The live probability of the face in `box` (x, y, w, h, full-frame pixels) of a BGR frame."""
        total = 0.0
        with self._lock:
            for net, scale in self._nets:
                net.setInput(wide_crop(image, box, scale).astype(np.float32).transpose(2, 0, 1)[None])
                logits = net.forward()[0].astype(np.float64)
                odds = np.exp(logits - logits.max())
                total += float(odds[LIVE_CLASS] / odds.sum())
        return total / len(self._nets)


def wide_crop(image: np.ndarray, box: tuple[float, float, float, float], scale: float) -> np.ndarray:
    """The box widened `scale` times about its centre, shifted (not cut) to stay inside the image and
    shrunk only when the image is smaller; resized to 80x80. The models' own input protocol."""
    height, width = image.shape[:2]
    x, y, w, h = box
    w, h = max(w, 1.0), max(h, 1.0)
    scale = min((height - 1) / h, (width - 1) / w, scale)
    cx, cy, nw, nh = x + w / 2, y + h / 2, w * scale, h * scale
    left, top = cx - nw / 2, cy - nh / 2
    left = min(max(left, 0.0), width - 1 - nw)
    top = min(max(top, 0.0), height - 1 - nh)
    x0, y0 = int(max(left, 0)), int(max(top, 0))
    x1, y1 = int(left + nw) + 1, int(top + nh) + 1
    return cv2.resize(image[y0:y1, x0:x1], (INPUT_SIZE, INPUT_SIZE))
