"""Rendered presentation attacks: a photo on a hand-held card, or a photo or video on a phone or tablet,
moved as a hand moves it in front of a door camera.

The card (or screen) is a flat rectangle in 3-D, posed by a smooth random walk (turning, tilting, coming
closer) plus hand tremor and projected through a pinhole camera onto a background, so the face on it moves
by exactly one homography per frame, as a flat picture's does. Then the camera's part: light, blur,
sensor noise and JPEG compression. What is not rendered: paper texture, ink dots, gloss, moiré and a
screen's pixel grid, so a model that relies on them sees an easier attack here than in life, and a model
that needs them sees a harder one.

Used by bench/liveness.py (the attack corpus) and by the door's end-to-end test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import cv2
import numpy as np

Kind = Literal["print", "screen", "cutout"]  # a cut-out: the face cut from a print along its outline, no card
FRAME_W, FRAME_H = 640, 480
FOCAL_PX = 600.0  # a door camera's wide lens at 640x480


@dataclass(frozen=True)
class AttackStyle:
    kind: Kind = "print"
    card_px: float = 220.0  # the card's height in the frame at its mean distance
    light: float = 1.0  # gain of the scene's light
    blur: float = 0.0  # Gaussian sigma, px (focus, motion)
    noise: float = 2.0  # sensor noise, grey levels
    sway_deg: float = 18.0  # how far the hand turns and tilts the card
    approach: float = 0.25  # how much closer it comes over the sequence (0.25: a quarter nearer)
    jpeg_quality: int = 85
    hand: bool = True  # fingers over the card's lower edge
    seed: int = 0


@dataclass
class Background:
    """A door scene: a wall, a door frame, a floor; the same scene for a whole sequence."""

    image: np.ndarray = field(default_factory=lambda: door_scene(0))


def door_scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wall = rng.uniform(120, 210, 3)
    image = np.empty((FRAME_H, FRAME_W, 3), np.float32)
    image[:] = wall
    ramp = np.linspace(0.75, 1.1, FRAME_W, dtype=np.float32)[None, :, None]
    image *= ramp  # light from one side
    x0 = int(rng.uniform(60, 200))
    cv2.rectangle(image, (x0, 20), (x0 + 300, FRAME_H), tuple(float(v) for v in rng.uniform(40, 120, 3)), -1)
    cv2.rectangle(image, (x0 + 20, 40), (x0 + 280, FRAME_H), tuple(float(v) for v in rng.uniform(60, 160, 3)), -1)
    cv2.rectangle(image, (0, FRAME_H - 60), (FRAME_W, FRAME_H), tuple(float(v) for v in rng.uniform(50, 110, 3)), -1)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(image, (0, 0), 1.2), 0, 255).astype(np.uint8)


def card_face(photo: np.ndarray, kind: Kind) -> np.ndarray:
    """The picture as the attacker holds it: a print with a white border, a screen with a black bezel
    (brighter, bluer, with a little glare), or a print cut along the head's outline (BGRA: an oval mask)."""
    picture = photo.astype(np.float32)
    h, w = picture.shape[:2]
    if kind == "cutout":
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (w // 2, int(h * 0.45)), (int(w * 0.3), int(h * 0.4)), 0, 0, 360, 255, -1)
        inked = np.clip(picture * 0.88 + 18, 0, 255).astype(np.uint8)
        return np.dstack([inked, mask])
    if kind == "print":
        picture = picture * 0.88 + 18  # ink on paper: less contrast than the original
        border = int(0.06 * max(h, w))
        card = np.full((h + 2 * border, w + 2 * border, 3), 235, np.float32)
        card[border:border + h, border:border + w] = picture
        return np.clip(card, 0, 255).astype(np.uint8)
    picture = 255.0 * (picture / 255.0) ** 0.85 * np.array([1.06, 1.0, 0.94], np.float32)  # BGR: bluer, brighter
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    picture += 30.0 * np.exp(-(((xx - 0.7 * w) / (0.3 * w)) ** 2 + ((yy - 0.25 * h) / (0.3 * h)) ** 2))[..., None]  # glare
    bezel = int(0.05 * max(h, w))
    card = np.full((h + 2 * bezel, w + 2 * bezel, 3), 18, np.float32)
    card[bezel:bezel + h, bezel:bezel + w] = picture
    return np.clip(card, 0, 255).astype(np.uint8)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _smooth_walk(rng: np.random.Generator, frames: int, amplitude: float) -> np.ndarray:
    """A hand's slow sway (a few cycles over the sequence) plus tremor."""
    t = np.linspace(0, 1, frames)
    walk = sum(rng.uniform(-1, 1) * np.sin(2 * np.pi * (rng.uniform(0.3, 1.5) * t + rng.uniform(0, 1)))
               for _ in range(3)) / 2.0
    return amplitude * walk + rng.normal(0, amplitude * 0.03, frames)


def poses(frames: int, style: AttackStyle) -> Iterator[np.ndarray]:
    """One 3x3 homography per frame: the card's unit square (0..1 x 0..1 in card pixels scaled) → frame."""
    rng = np.random.default_rng(style.seed)
    sway = np.radians(style.sway_deg)
    yaw, pitch, roll = (_smooth_walk(rng, frames, a) for a in (sway, sway * 0.7, sway * 0.3))
    cx, cy = (_smooth_walk(rng, frames, a) for a in (40.0, 25.0))
    distance = FOCAL_PX / style.card_px * np.linspace(1.0 + style.approach / 2, 1.0 - style.approach / 2, frames)
    camera = np.array([[FOCAL_PX, 0, FRAME_W / 2], [0, FOCAL_PX, FRAME_H / 2], [0, 0, 1]])
    for i in range(frames):
        rotation = _rotation(yaw[i], pitch[i], roll[i])
        translation = np.array([cx[i] / FOCAL_PX * distance[i], cy[i] / FOCAL_PX * distance[i], distance[i]])
        # the card's plane: x, y in card heights (centred), z = 0 → homography K [r1 r2 t]
        yield camera @ np.column_stack([rotation[:, 0], rotation[:, 1], translation])


def render(pictures: Sequence[np.ndarray], frames: int, style: AttackStyle,
           background: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The attack's frames; `pictures` is one photo, or a video's frames (played one per frame, looping)."""
    rng = np.random.default_rng(style.seed + 1)
    scene = door_scene(style.seed) if background is None else background
    cards = [card_face(p, style.kind) for p in pictures]
    skin = np.array(rng.uniform([60, 90, 140], [120, 150, 210]), np.float32)
    for i, homography in enumerate(poses(frames, style)):
        card = cards[i % len(cards)]
        h, w = card.shape[:2]
        aspect = w / h
        # card pixels → card plane (height 1, centred) → frame
        to_plane = np.array([[1.0 / h, 0, -aspect / 2], [0, 1.0 / h, -0.5], [0, 0, 1]])
        warp = homography @ to_plane
        frame = scene.copy()
        if card.shape[2] == 4:  # a cut-out: only its outline's inside covers the scene
            warped = cv2.warpPerspective(card, warp, (FRAME_W, FRAME_H), flags=cv2.INTER_LINEAR)
            inside = warped[..., 3:].astype(np.float32) / 255.0
            frame = (warped[..., :3] * inside + frame * (1 - inside)).astype(np.uint8)
        else:
            cv2.warpPerspective(card, warp, (FRAME_W, FRAME_H), dst=frame, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_TRANSPARENT)
        if style.hand:  # two fingers and a thumb over the lower edge, moving with the card
            for u in (0.15, 0.3, 0.8):
                p = warp @ np.array([u * w, h * 1.0, 1.0])
                centre = (int(p[0] / p[2]), int(p[1] / p[2]))
                radius = max(4, int(0.045 * style.card_px))
                cv2.ellipse(frame, centre, (radius, int(radius * 1.8)), 0, 0, 360, tuple(float(v) for v in skin), -1)
        yield camera_look(frame, style, rng)


def held_over(frames: Sequence[np.ndarray], faces: Sequence[tuple[float, float, float, float]], photo: np.ndarray,
              photo_face: tuple[float, float, float, float], covered: int, oval: bool = False) -> Iterator[np.ndarray]:
    """A live person (`frames`, their face boxes) holding a print of someone else over their own face for the
    first `covered` frames, then lowering it: the print's face at the size and place of theirs, cut along an
    oval (a cut-out) or as a head-and-shoulders rectangle."""
    ox, oy, ow, oh = photo_face
    mask = np.zeros(photo.shape[:2], np.uint8)
    if oval:
        cv2.ellipse(mask, (int(ox + ow / 2), int(oy + oh * 0.45)), (int(ow * 0.75), int(oh * 0.95)), 0, 0, 360, 255, -1)
    else:
        cv2.rectangle(mask, (int(ox - ow * 0.6), int(oy - oh * 0.6)), (int(ox + ow * 1.6), int(oy + oh * 1.8)), 255, -1)
    for i, (frame, (x, y, w, h)) in enumerate(zip(frames, faces)):
        if i >= covered:
            yield frame
            continue
        k = h / oh
        move = np.array([[k, 0, x + w / 2 - k * (ox + ow / 2)], [0, k, y + h / 2 - k * (oy + oh / 2)]])
        size = (frame.shape[1], frame.shape[0])
        inside = cv2.warpAffine(mask, move, size) > 127
        covered_frame = frame.copy()
        covered_frame[inside] = cv2.warpAffine(photo, move, size)[inside]
        yield covered_frame


def camera_look(frame: np.ndarray, style: AttackStyle, rng: np.random.Generator) -> np.ndarray:
    image = frame.astype(np.float32) * style.light
    if style.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), style.blur)
    image += rng.normal(0, style.noise, image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, style.jpeg_quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def head_photo(photo: np.ndarray, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """A head-and-shoulders cut of a photo (around a face box if given), as an attacker would print it."""
    h, w = photo.shape[:2]
    if box is None:
        return photo
    x, y, bw, bh = box
    cx, cy, side = x + bw / 2, y + bh / 2, max(bw, bh) * 2.2
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side * 0.45))
    x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side * 0.6))
    return photo[y0:y1, x0:x1]


def write_video(frames: Iterator[np.ndarray], path: Path, fps: float = 10.0,
                size: tuple[int, int] = (FRAME_W, FRAME_H)) -> int:
    """Writes MJPEG in AVI (readable by every OpenCV build); returns the frame count."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    count = 0
    try:
        for frame in frames:
            writer.write(frame)
            count += 1
    finally:
        writer.release()
    return count
