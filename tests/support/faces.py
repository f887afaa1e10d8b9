"""Scenes made from the public-domain face photos: a face in a fixed spot of a still background, one face
replaced in place by another (tailgating, no cut), and look-alikes (a photo blended into another)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tests.support.daemon import FIXTURES

SPOT = (240, 160)  # top-left corner of the pasted face
SIDE = 160  # 160x160 of a 640x480 frame: a face swap moves the colour histogram far less than a scene cut


def face_square(photo: str | Path, side: int = SIDE) -> np.ndarray:
    """The photo's one face with some margin, as a side x side square."""
    from facewatchd.vision.analyzer import FaceAnalyzer

    image = cv2.imread(str(FIXTURES / photo if isinstance(photo, str) else photo))
    faces = FaceAnalyzer().faces(image)
    assert len(faces) == 1, photo
    x, y, w, h = faces[0].face.box
    cx, cy, r = x + w / 2, y + h / 2, max(w, h) * 0.9
    crop = image[max(0, int(cy - r)):int(cy + r), max(0, int(cx - r)):int(cx + r)]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def background() -> np.ndarray:
    rng = np.random.default_rng(7)  # a fixed, textured wall: the same in every frame
    wall = rng.integers(90, 150, (48, 64, 3), dtype=np.uint8)
    return cv2.resize(wall, (640, 480), interpolation=cv2.INTER_CUBIC)


def scene(face: np.ndarray) -> np.ndarray:
    frame = background()
    x, y = SPOT
    frame[y:y + face.shape[0], x:x + face.shape[1]] = face
    return frame


def lookalike(photo: str, other: str, alpha: float) -> np.ndarray:
    """`photo`'s face blended with `other`'s: 1 - alpha of the first, alpha of the second."""
    return cv2.addWeighted(face_square(photo), 1 - alpha, face_square(other), alpha, 0)


def write_frames(path: Path, *runs: tuple[np.ndarray, int]) -> Path:
    """A folder of frames: each (face, n) adds n frames of that face in the same spot."""
    path.mkdir(parents=True, exist_ok=True)
    index = 0
    for face, count in runs:
        image = scene(face)
        for _ in range(count):
            index += 1
            cv2.imwrite(str(path / f"{index:04d}.png"), image)
    return path
