"""Is a face worth naming? The face quality gate, from what the detector and the aligned crop show. No I/O.

A face below the gate is still a face: it counts for footfall and presence, and can fire "unknown person
present". It never becomes a person, a template, a cached view or a review card: a dark, blurred, tiny or
side-on face matches its own person so rarely (bench/quality.py) that a person made of it is a split, and
every such person raises the naming threshold for everyone else (identity.py).

Measures, each on the 112x112 aligned crop SFace embeds (so a small face, upscaled there, is blurred):
- `side`: the face box's shorter side in frame pixels;
- `sharpness`: variance of the Laplacian of the grey crop (a blurred or upscaled face has little);
- `brightness`, `contrast`: mean and standard deviation of the grey crop's inner face;
- `yaw`: how far the nose sits off the eyes' and mouth's midline, in eye distances (0 frontal; ~0.5 and
  more: a profile, whose landmarks YuNet guesses);
- `score`: the detector's confidence;
- `norm`: SFace's feature norm before normalisation. Margin-loss embedders (SFace, ArcFace) learn small
  norms for faces they cannot read (the MagFace idea); on LFW it holds for SFace and is the strongest of
  these signals: probes in its lowest fifth fail to match 59x as often as those in its highest.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.vision.detector import Face

# the inner face of the aligned crop: eyes to chin, cheek to cheek (background and hair left out)
_INNER = (slice(28, 108), slice(20, 92))


@dataclass(frozen=True, slots=True)
class FaceQuality:
    side: float
    sharpness: float
    brightness: float
    contrast: float
    yaw: float
    score: float
    norm: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 3) for k in self.__slots__}  # type: ignore[attr-defined]


def yaw(landmarks: np.ndarray) -> float:
    """The nose's offset from the midline of the eyes and mouth corners, in eye distances."""
    right_eye, left_eye, nose, mouth_right, mouth_left = np.asarray(landmarks, np.float64).reshape(5, 2)
    axis = left_eye - right_eye
    eye_distance = float(np.hypot(*axis))
    if eye_distance < 1e-6:
        return 1.0  # eyes on one point: a profile (or a false detection)
    unit = axis / eye_distance
    middle = (right_eye + left_eye + mouth_right + mouth_left) / 4
    return abs(float((nose - middle) @ unit)) / eye_distance


def measure(face: Face, aligned: np.ndarray, norm: float) -> FaceQuality:
    """The gate's measures of a face, from its detection, its aligned crop and its embedding's norm."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    inner = grey[_INNER]
    return FaceQuality(side=float(min(face.box[2], face.box[3])),
                       sharpness=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
                       brightness=float(inner.mean()), contrast=float(inner.std()),
                       yaw=yaw(face.landmarks), score=float(face.score), norm=float(norm))


class QualityConfig(BaseModel):
    """`[quality]`: the gate a face must pass before it is sent, enrolled, learnt or shown for review.
    Each default is calibrated in bench/quality.py (LFW and darkened, blurred, downscaled copies)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_side: float = Field(32.0, ge=0, description="the face box's shorter side, in frame pixels (LFW faces cut to "
                            "27 px fail to match 32 % of the time, at 48 px and more 20 %, mostly the blurred ones)")
    min_norm: float = Field(9.5, ge=0, description="SFace's feature norm: below it faces fail to match 62 % of the "
                            "time, above it 4.5 %; 99.5 % of clean LFW faces reach it")
    min_sharpness: float = Field(5.0, ge=0, description="Laplacian variance of the aligned grey face: below it "
                                 "(a blurred or upscaled face) 66 % fail to match")
    min_brightness: float = Field(25.0, ge=0, le=255, description="mean grey of the inner face (near black below)")
    max_brightness: float = Field(235.0, ge=0, le=255, description="mean grey of the inner face (burnt out above)")
    min_contrast: float = Field(6.0, ge=0, le=128, description="grey standard deviation of the inner face")
    max_yaw: float = Field(1.0, gt=0, description="nose off the face's midline, in eye distances (0: frontal; "
                           "about 0.7-0.9 three-quarter; beyond 1 a profile, whose landmarks are guesses)")
    min_score: float = Field(0.75, ge=0, le=1, description="the detector's confidence")

    def failures(self, quality: FaceQuality) -> list[str]:
        """Why a face fails the gate (empty: it passes)."""
        if not self.enabled:
            return []
        checks = (("small", quality.side < self.min_side), ("unreadable", quality.norm < self.min_norm),
                  ("blurred", quality.sharpness < self.min_sharpness),
                  ("dark", quality.brightness < self.min_brightness),
                  ("overexposed", quality.brightness > self.max_brightness),
                  ("flat", quality.contrast < self.min_contrast), ("turned", quality.yaw > self.max_yaw),
                  ("unsure", quality.score < self.min_score))
        return [why for why, failed in checks if failed]

    def passes(self, quality: FaceQuality) -> bool:
        return not self.failures(quality)
