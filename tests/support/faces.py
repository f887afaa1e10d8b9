"""Scenes made from the public-domain face photos: a face in a fixed spot of a still background, one face
replaced in place by another (tailgating, no cut), and look-alikes (a photo blended into another)."""

from __future__ import annotations

import functools
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


def doorway(face: np.ndarray | None, frames: int, enter_at: int, *, noise: float = 3.0, flicker: float = 0.0,
            step: int = 8, seed: int = 1) -> list[np.ndarray]:
    """A still camera on an empty wall, with sensor noise (sigma `noise` grey levels) and optionally a
    light that flickers (+/- `flicker` levels); from frame `enter_at` a face walks in from the left edge,
    `step` px a frame, and stops at SPOT."""
    rng = np.random.default_rng(seed)
    wall = background().astype(np.float32)
    out = []
    for i in range(frames):
        image = wall.copy()
        if face is not None and i >= enter_at:
            x = min(SPOT[0], -face.shape[1] + step * (i - enter_at + 1))
            left, right = max(0, x), min(image.shape[1], x + face.shape[1])
            y = SPOT[1]
            if right > left:
                image[y:y + face.shape[0], left:right] = face[:, left - x:right - x]
        image += flicker * np.sin(i / 3.0) + rng.normal(0, noise, image.shape)
        out.append(np.clip(image, 0, 255).astype(np.uint8))
    return out


def write_video(path: Path, images: list[np.ndarray], fps: float = 15.0) -> Path:
    """Frames as a compressed video (MJPEG), so the pipeline decodes what a camera would send."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (images[0].shape[1], images[0].shape[0]))
    for image in images:
        writer.write(image)
    writer.release()
    return path


@functools.cache
def _solvay_boxes() -> tuple[tuple[float, float, float, float], ...]:
    from facewatchd.vision.detector import YuNetDetector

    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    return tuple(f.box for f in sorted(YuNetDetector().detect(image), key=lambda f: (f.box[1] // 200, f.box[0])))


def stranger_crop(index: int) -> bytes:
    """A device's JPEG crop of one sitter of the 1927 Solvay photo (29 people, public domain): a real face the
    resolver finds and embeds itself; the same index is the same face, another index another person."""
    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    x, y, w, h = _solvay_boxes()[index]
    crop = image[int(y - 0.3 * h):int(y + 1.3 * h), int(x - 0.3 * w):int(x + 1.3 * w)]
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    assert ok
    return jpeg.tobytes()
