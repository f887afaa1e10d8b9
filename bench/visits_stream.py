"""The synthetic camera stream of bench/visits.py, and what is detected in it.

People, one folder of photos each, walk into a 960x540 scene at 10 fps, stay 3-6 s while their face moves,
grows or shrinks, tilts and changes brightness, showing their photos in turn, with camera noise; then they
leave, some come back later, and at times two or three are in frame at once. Deterministic for a seed.
Where each face was drawn is known, so every detection has its true identity; each frame's faces are
aligned and embedded once (`SharedEmbeddings`), for every policy.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facewatchd.pipeline.camera import IMAGE_SUFFIXES
from facewatchd.pipeline.tracker import iou
from facewatchd.vision.detector import Face, YuNetDetector
from facewatchd.vision.embedder import Embedder

FPS = 10.0
WIDTH, HEIGHT = 960, 540
LANES = 3  # walking lanes across the scene: at most three people in frame at once
LANE_REST_S = 1.5  # a lane stays empty this long after someone leaves (longer than a track survives)
VISIT_S = (3.0, 6.0)
RETURN_AFTER_S = 8.0  # a person comes back no sooner than this after leaving
SPRITE_MARGIN = 1.8  # sprite side / face side
PHOTOS_PER_PERSON = 8


# -- the people and the stream ------------------------------------------------------------------

@dataclass
class Person:
    index: int
    name: str
    sprites: list[np.ndarray]  # square BGR crops, the face centred, face side = sprite side / SPRITE_MARGIN


@dataclass
class Visit:
    index: int
    person: int
    first: bool
    start: int  # frame index, inclusive
    end: int  # exclusive
    lane: int
    photos: tuple[int, ...]  # sprites shown in turn, `hold` frames each: the head turns, the pose changes
    hold: int
    x: tuple[float, float]  # face centre at start and end
    y: tuple[float, float]
    side: tuple[float, float]  # sprite side in px at start and end
    gain: tuple[float, float]  # brightness at start and end
    tilt: tuple[float, float]  # head tilt: amplitude in degrees, period in frames

    def at(self, frame: int) -> tuple[float, float, float, float, float, int]:
        """Centre x, y, sprite side, gain, tilt and sprite number at a frame of the visit."""
        t = (frame - self.start) / max(1, self.end - 1 - self.start)
        lerp = lambda ab: ab[0] + (ab[1] - ab[0]) * t  # noqa: E731
        tilt = self.tilt[0] * math.sin(2 * math.pi * (frame - self.start) / self.tilt[1])
        photo = self.photos[((frame - self.start) // self.hold) % len(self.photos)]
        return lerp(self.x), lerp(self.y), lerp(self.side), lerp(self.gain), tilt, photo


def largest_face(detector: YuNetDetector, image: np.ndarray) -> Face | None:
    faces = detector.detect(image)
    return max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None


def sprite(image: np.ndarray, face: Face) -> np.ndarray:
    """A square crop centred on the face, SPRITE_MARGIN times its size, padded where the photo ends."""
    x, y, w, h = face.box
    side = int(max(w, h) * SPRITE_MARGIN)
    cx, cy = int(x + w / 2), int(y + h / 2)
    pad = side
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[cy + pad - side // 2: cy + pad + side - side // 2, cx + pad - side // 2: cx + pad + side - side // 2]
    return cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)


def load_people(faces_dir: Path, wanted: int, min_photos: int, rng: np.random.Generator,
                detector: YuNetDetector) -> list[Person]:
    folders = sorted(d for d in faces_dir.iterdir() if d.is_dir())
    photos = {d: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for d in folders}
    eligible = [d for d in folders if len(photos[d]) >= min_photos]
    if not eligible:
        raise SystemExit(f"{faces_dir}: no subfolder with {min_photos} or more photos")
    order = rng.permutation(len(eligible))
    people: list[Person] = []
    for i in order:
        folder = eligible[i]
        sprites = []
        for path in photos[folder][:PHOTOS_PER_PERSON]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            face = largest_face(detector, image) if image is not None else None
            if face is not None:
                sprites.append(sprite(image, face))
        if sprites:
            people.append(Person(len(people), folder.name, sprites))
        if len(people) == wanted:
            break
    return people


def schedule(people: list[Person], n_visits: int, rng: np.random.Generator) -> list[Visit]:
    """Every person's first visit, and returns of people seen before, with overlaps across lanes."""
    visits: list[Visit] = []
    fresh = [p.index for p in people]
    left_at: dict[int, float] = {}  # person → when their last visit ends
    lane_free = [0.0] * LANES
    shown: Counter[int] = Counter()
    t = 1.0
    for i in range(max(n_visits, len(people))):
        returners = [p for p, end in left_at.items() if end + RETURN_AFTER_S <= t]
        if fresh and (not returners or len(fresh) >= max(n_visits, len(people)) - i or rng.random() < 0.5):
            person, first = fresh.pop(0), True
        elif returners:
            person, first = int(rng.choice(returners)), False
        else:  # everyone seen was here a moment ago: wait for the first of them to be allowed back
            t = min(left_at.values()) + RETURN_AFTER_S
            person, first = int(rng.choice([p for p, end in left_at.items() if end + RETURN_AFTER_S <= t])), False
        free = [lane for lane in range(LANES) if lane_free[lane] <= t]
        if not free:
            t = min(lane_free)
            free = [lane for lane in range(LANES) if lane_free[lane] <= t]
        lane = int(rng.choice(free))
        duration = float(rng.uniform(*VISIT_S))
        n = len(people[person].sprites)
        k = shown[person]
        shown[person] += 1
        first_photo = (3 * k) % n  # each visit starts on other photos
        cx = WIDTH * (lane + 0.5) / LANES
        direction = rng.choice([-1.0, 1.0])
        y0 = HEIGHT * 0.45 + float(rng.uniform(-40, 40))
        side0 = float(rng.uniform(130, 190))
        visits.append(Visit(
            index=len(visits), person=person, first=first, start=round(t * FPS), end=round((t + duration) * FPS),
            lane=lane, photos=tuple((first_photo + j) % n for j in range(n)), hold=int(rng.integers(8, 17)),
            x=(cx - direction * 60, cx + direction * 60), y=(y0, y0 + float(rng.uniform(-30, 30))),
            side=(side0, min(WIDTH / LANES - 20, side0 * float(rng.uniform(0.75, 1.45)))),
            gain=(float(rng.uniform(0.55, 1.35)), float(rng.uniform(0.55, 1.35))),
            tilt=(float(rng.uniform(0, 10)), float(rng.uniform(15, 40)))))
        left_at[person] = t + duration
        lane_free[lane] = t + duration + LANE_REST_S
        # the next one comes in while this one is still here, or a little after
        t = t + duration * float(rng.uniform(0.25, 0.7)) if rng.random() < 0.45 else t + duration + float(
            rng.uniform(0.3, 3.0))
    return visits


def background(rng: np.random.Generator) -> np.ndarray:
    """A still, textured room: smooth fields of muted colour."""
    gray = rng.integers(50, 190, (9, 16, 1))
    coarse = np.clip(gray + rng.integers(-20, 21, (9, 16, 3)), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC), (0, 0), 8)


def sensor_noise(rng: np.random.Generator, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few frames of camera noise (sigma 3), as (added, subtracted) uint8 pairs, used in turn."""
    bank = []
    for _ in range(n):
        noise = rng.normal(0, 3, (HEIGHT, WIDTH, 3))
        bank.append((np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)))
    return bank


def head_mask(side: int) -> np.ndarray:
    """A soft oval around the face: the head is pasted, not the photo's background (other people in it)."""
    mask = np.zeros((side, side), np.float32)
    face = side / SPRITE_MARGIN
    cv2.ellipse(mask, (side // 2, int(side * 0.48)), (int(face * 0.62), int(face * 0.78)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), face * 0.06)[..., None]


@dataclass
class Drawn:
    visit: Visit
    face_box: tuple[float, float, float, float]  # where the face is, x y w h


class Scene:
    def __init__(self, people: list[Person], visits: list[Visit], rng: np.random.Generator) -> None:
        self.people = people
        self.visits = visits
        self.room = background(rng)
        self.noise = sensor_noise(rng)
        self.mask = head_mask(256)

    def render(self, frame: int) -> tuple[np.ndarray, list[Drawn]]:
        image = self.room.copy()
        drawn: list[Drawn] = []
        for v in self.visits:
            if not v.start <= frame < v.end:
                continue
            cx, cy, side, gain, tilt, photo = v.at(frame)
            s = max(8, int(side))
            turn = cv2.getRotationMatrix2D((128, 128), tilt, 1.0)
            head = cv2.warpAffine(self.people[v.person].sprites[photo], turn, (256, 256),
                                  borderMode=cv2.BORDER_REPLICATE)
            head = cv2.resize(head, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) * gain
            alpha = cv2.resize(self.mask, (s, s), interpolation=cv2.INTER_LINEAR)[..., None]
            x0, y0 = int(cx - s / 2), int(cy - s / 2)
            fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(WIDTH, x0 + s), min(HEIGHT, y0 + s)
            a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
            region = image[fy0:fy1, fx0:fx1].astype(np.float32)
            image[fy0:fy1, fx0:fx1] = np.clip(region * (1 - a) + head[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] * a,
                                              0, 255).astype(np.uint8)
            fs = s / SPRITE_MARGIN
            drawn.append(Drawn(v, (cx - fs / 2, cy - fs / 2, fs, fs)))
        plus, minus = self.noise[frame % len(self.noise)]
        return cv2.subtract(cv2.add(image, plus), minus), drawn


# -- detections, shared by every policy ----------------------------------------------------------

@dataclass
class Detection:
    face: Face
    aligned: np.ndarray
    embedding: np.ndarray
    person: int | None  # ground truth; None for a detection that is not a drawn face
    visit: int | None
    jpeg: bytes | None = None


def truth(face: Face, drawn: list[Drawn]) -> Drawn | None:
    best = max(drawn, key=lambda d: iou(face.box, d.face_box), default=None)
    return best if best is not None and iou(face.box, best.face_box) >= 0.3 else None


def aligned_key(aligned: np.ndarray) -> bytes:
    return hashlib.blake2b(aligned.tobytes(), digest_size=16).digest()


class SharedEmbeddings:
    """The embedder the facewatchd policy gets: it serves the alignments and embeddings this frame has
    already computed for everyone, so all policies see the same vectors and none is computed twice."""

    def __init__(self, real: Embedder) -> None:
        self.real = real
        self._aligned: dict[int, np.ndarray] = {}  # id(face) → aligned, this frame only
        self._embeddings: OrderedDict[bytes, tuple[np.ndarray, float]] = OrderedDict()  # with the feature norm
        self.computed_again = 0
        self.plain = 0  # re-verifications' own embeddings (no mirror image): facewatchd's, not the frame's

    def detections(self, image: np.ndarray, faces: list[Face]) -> list[tuple[np.ndarray, np.ndarray]]:
        self._aligned = {}
        aligned = [self.real.align(image, f) for f in faces]
        vectors, norms = self.real.embed_batch_with_norms(aligned)
        for f, a, e, n in zip(faces, aligned, vectors, norms):
            self._aligned[id(f)] = a
            self._embeddings[aligned_key(a)] = (e, float(n))
        while len(self._embeddings) > 20_000:
            self._embeddings.popitem(last=False)
        return list(zip(aligned, vectors))

    def align(self, frame: np.ndarray, face: Face) -> np.ndarray:
        found = self._aligned.get(id(face))
        return found if found is not None else self.real.align(frame, face)

    def _embed_one(self, aligned: np.ndarray, mirror: bool | None) -> tuple[np.ndarray, float]:
        if mirror is False:  # a re-verification's plain embedding: not what the frame computed
            self.plain += 1
            vectors, norms = self.real.embed_batch_with_norms([aligned], mirror)
            return vectors[0], float(norms[0])
        found = self._embeddings.get(aligned_key(aligned))
        if found is None:
            self.computed_again += 1
            vectors, norms = self.real.embed_batch_with_norms([aligned])
            found = (vectors[0], float(norms[0]))
        return found

    def embed_aligned(self, aligned: np.ndarray, mirror: bool | None = None) -> np.ndarray:
        return self._embed_one(aligned, mirror)[0]

    def embed_batch_with_norms(self, aligned: list[np.ndarray], mirror: bool | None = None) \
            -> tuple[np.ndarray, np.ndarray]:
        found = [self._embed_one(a, mirror) for a in aligned]
        if not found:
            return self.real.embed_batch_with_norms([])
        return np.stack([e for e, _ in found]), np.array([n for _, n in found], np.float32)

    def embed(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return self.embed_aligned(self.align(frame, face))

    def embed_batch(self, aligned: list[np.ndarray], mirror: bool | None = None) -> np.ndarray:
        return self.embed_batch_with_norms(aligned, mirror)[0]

