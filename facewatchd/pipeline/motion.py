"""The motion gate: a door or shop camera shows an empty scene most of the day, and a frame in which
nothing moved cannot hold a face that was not there a moment ago, so it is not worth a detection.

As Frigate does before object detection: each frame is shrunk to a small grey image and compared with
a running average of the scene. Camera noise is smoothed away by the shrinking and a blur; a change of
light (a cloud, a lamp, auto-exposure) shifts every pixel alike, so the mean shift is taken out before
pixels are counted, and a change over most of the image (the camera moved, a light switched) resets
the background and lets that frame through. The daemon detects every frame while any track is live,
so the gate only decides when the scene is empty; `refresh_frames` bounds how long it stays shut.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


SMALL_WIDTH = 160  # pixels: enough for a face-sized change, small enough to cost almost nothing
MIN_AREA_PIXELS = 2  # of the small image: a moved area smaller than this is noise


class MotionConfig(BaseModel):
    """`[motion]`: skip face detection on frames of an empty, unchanging scene."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    pixel_threshold: float = Field(18.0, gt=0, lt=255, description="grey levels a pixel must change by, after "
                                   "the frame's overall change of light is taken out, to count as moved")
    min_area: float = Field(0.002, gt=0, lt=1, description="share of the image that must move to open the gate")
    relight_area: float = Field(0.6, gt=0, le=1, description="a change over this share of the image is a new "
                                "scene (camera moved, light switched): the background starts again")
    background_rate: float = Field(0.05, gt=0, le=1, description="how fast the background follows the scene "
                                   "(share of each frame blended in)")
    refresh_frames: int = Field(150, ge=1, description="detect at least this often however still the scene is")


class MotionGate:
    """One per camera, used from one thread at a time (the camera's detection stage)."""

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self._background: np.ndarray | None = None
        self._since_open = 0
        # Where the last frame moved, as shares of the frame (x, y, w, h in 0-1); None: it cannot tell (the
        # first frame, a new scene, the gate turned off), so anything may have moved (pipeline/regions.py).
        self.moved: list[tuple[float, float, float, float]] | None = None

    def opens(self, small_bgr: np.ndarray) -> bool:
        """Whether this frame (already shrunk, see `shrink`) may hold a new face and must be detected."""
        c = self.config
        self.moved = None
        if not c.enabled:
            return True
        grey = cv2.GaussianBlur(cv2.cvtColor(small_bgr, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(np.float32)
        background = self._background
        if background is None or background.shape != grey.shape:  # the first frame, or a new frame size
            self._background = grey
            return self._opened()
        delta = grey - background
        delta -= float(delta.mean())  # a change of light moves every pixel alike: not motion
        mask = np.abs(delta) > c.pixel_threshold
        moved = float(np.count_nonzero(mask)) / delta.size
        if moved >= c.relight_area:
            self._background = grey
            return self._opened()
        self.moved = _areas(mask)
        cv2.accumulateWeighted(grey, background, c.background_rate)
        self._since_open += 1
        if moved >= c.min_area or self._since_open >= c.refresh_frames:
            return self._opened()
        return False

    def _opened(self) -> bool:
        self._since_open = 0
        return True


def _areas(mask: np.ndarray) -> list[tuple[float, float, float, float]]:
    """The moved pixels' connected areas, as shares of the image (a pixel or two alone is noise)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    h, w = mask.shape
    return [(float(x) / w, float(y) / h, float(bw) / w, float(bh) / h)
            for x, y, bw, bh, pixels in stats[1:count] if pixels >= MIN_AREA_PIXELS]


def shrink(image: np.ndarray) -> np.ndarray:
    """The frame at SMALL_WIDTH pixels wide, shared by the motion gate and the cut detector (bilinear: a
    quarter of the cost of INTER_AREA, and the gate blurs what it compares anyway)."""
    h, w = image.shape[:2]
    return cv2.resize(image, (SMALL_WIDTH, max(1, round(h * SMALL_WIDTH / w))), interpolation=cv2.INTER_LINEAR)
