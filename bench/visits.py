#!/usr/bin/env python3
"""Resolver calls and identity errors of four recognition policies on one synthetic camera stream.

The stream (deterministic for a seed): people, one folder of photos each, walk into a 960x540 scene at
10 fps, stay 3-6 s while their face moves, grows or shrinks, tilts and changes brightness, showing
their photos in turn (about a second each, a new pose; every visit starts on other photos), with
camera noise; then they leave, some come back later, and at times two or three are in frame at once.
Where each face was drawn is known, so every detection has its true identity.

Every frame is detected and every face aligned and embedded once (YuNet + SFace, as the daemon is
configured); the same detections and embeddings feed every policy, so only the policy differs:

  facewatchd     the real Tracker, Recognizer, FaceCache, Uplink and outbox, talking through the local
                 link to the embedded resolver, labels coming back through the shadow
  per-frame      every detected face sent to the resolver
  seed-workshop  the seed's cache: the 6 most recently inserted embeddings, FIFO; a match within the
                 threshold counts as known; a match whose person has no name is sent again once 60 s
                 of stream time have passed since it was last sent
  per-track      each new track sent once (its first frame), no memory across tracks

Each policy has its own local resolver (the same resolver core and SQLite stores on its own state dir).
When a person's first visit is over, the operator names them, as `facewatchd faces label` does: the
person id the policy gave most of that visit's faces gets the person's folder name.

Reported per policy: resolver calls (per visit, per distinct person, on first visits per person, per
return visit); merges (one person id given to two people) and splits (one person given two ids), over
every detected face; faces shown with another person's name after labelling; frames from a person's
first appearance in a visit to an id (first visits) and to their name (visits after they were named).
A table, then one JSON line.

    .venv/bin/python bench/visits.py --faces ../shared/data/lfw-dev/images --min-photos 3 --people 10 --visits 36
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter, OrderedDict, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facewatchd.app.config import Config, parse_config
from facewatchd.app.device import Daemon
from facewatchd.link.local import LocalLink
from facewatchd.logs import configure_logging
from facewatchd.messages import FaceQuery, Resolution, new_face_id
from facewatchd.outbox import Outbox
from facewatchd.pipeline.cache import FaceCache
from facewatchd.pipeline.camera import IMAGE_SUFFIXES, Frame
from facewatchd.pipeline.recognizer import Recognizer
from facewatchd.pipeline.motion import shrink
from facewatchd.pipeline.tracker import SceneCutDetector, Track, Tracker, TrackUpdate, iou
from facewatchd.pipeline.uplink import Uplink, face_crop_jpeg
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverStores
from facewatchd.vision.detector import Face, YuNetDetector
from facewatchd.vision.embedder import Embedder, create_embedder

FPS = 10.0
WIDTH, HEIGHT = 960, 540
LANES = 3  # walking lanes across the scene: at most three people in frame at once
LANE_REST_S = 1.5  # a lane stays empty this long after someone leaves (longer than a track survives)
VISIT_S = (3.0, 6.0)
RETURN_AFTER_S = 8.0  # a person comes back no sooner than this after leaving
SPRITE_MARGIN = 1.8  # sprite side / face side
PHOTOS_PER_PERSON = 8
THING = "bench"
SEED_CACHE_SIZE = 6
SEED_RESEND_S = 60.0
SETTLE_TIMEOUT_S = 10.0
POLICIES = ("facewatchd", "per-frame", "seed-workshop", "per-track")


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


# -- the policies -------------------------------------------------------------------------------

Shown = tuple[str | None, str | None]  # (person id, name) a policy shows for one face


@dataclass
class Call:
    person: int | None
    visit: int | None


class Policy:
    name = ""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.seconds = 0.0  # wall time spent in this policy, resolver included

    async def start(self, stack: AsyncExitStack) -> None:
        pass

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        raise NotImplementedError

    async def end(self, tracks: list[Track]) -> None:
        pass

    async def label(self, person_id: str, name: str) -> None:
        raise NotImplementedError


class DiscardShadow:
    """The baselines get their answer from the resolver call itself; no device listens on a shadow."""

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        return None


class ResolverPolicy(Policy):
    """A baseline that calls its own local resolver directly and waits for the answer."""

    def __init__(self, state_dir: Path, config: Config) -> None:
        super().__init__()
        # The resolver embeds each crop itself; these baselines hand it the embedding this bench already made
        # of the same face (same model), instead of running SFace a second time on every crop of every frame.
        self._embeddings: dict[bytes, np.ndarray] = {}
        self.stores = LocalResolverStores(state_dir / "resolver", self._embeddings.get)
        self.resolver = Resolver(self.stores.crops, self.stores.collection, self.stores.names, DiscardShadow(),
                                 config.identity, config.resolver.templates_per_person)
        self.uplink_config = config.uplink

    async def ask(self, frame: Frame, det: Detection, track: Track) -> Resolution:
        if det.jpeg is None:
            det.jpeg = face_crop_jpeg(frame.image, det.face, self.uplink_config)
        self.calls.append(Call(det.person, det.visit))
        self._embeddings[det.jpeg] = det.embedding
        try:
            return await self.resolver.resolve(FaceQuery(new_face_id(), THING, "bench", track.id, det.jpeg, None,
                                                         frame.ts))
        finally:
            self._embeddings.pop(det.jpeg, None)

    async def label(self, person_id: str, name: str) -> None:
        await self.resolver.label(person_id, name)

    async def end(self, tracks: list[Track]) -> None:
        self.stores.close()


class PerFrame(ResolverPolicy):
    name = "per-frame"

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        shown: list[Shown] = []
        for det, track in zip(detections, tracks):
            r = await self.ask(frame, det, track)
            shown.append((r.person_id, r.name))
        return shown


class PerTrack(ResolverPolicy):
    name = "per-track"

    def __init__(self, state_dir: Path, config: Config) -> None:
        super().__init__(state_dir, config)
        self._tracks: dict[str, Shown] = {}

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        for det, track in zip(detections, tracks):
            if track.id not in self._tracks:
                r = await self.ask(frame, det, track)
                self._tracks[track.id] = (r.person_id, r.name)
        for track in update.ended:
            self._tracks.pop(track.id, None)
        return [self._tracks[t.id] for t in tracks]


@dataclass
class SeedEntry:
    embedding: np.ndarray
    person_id: str
    name: str | None
    sent_ts: float


class SeedWorkshop(ResolverPolicy):
    name = "seed-workshop"

    def __init__(self, state_dir: Path, config: Config) -> None:
        super().__init__(state_dir, config)
        self.threshold = config.identity.name_threshold
        self._cache: deque[SeedEntry] = deque(maxlen=SEED_CACHE_SIZE)  # FIFO: the oldest insert leaves first

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        shown: list[Shown] = []
        for det, track in zip(detections, tracks):
            entry = max(self._cache, key=lambda e: float(e.embedding @ det.embedding), default=None)
            if entry is not None and float(entry.embedding @ det.embedding) >= self.threshold:
                if entry.name is None and frame.ts - entry.sent_ts >= SEED_RESEND_S:
                    r = await self.ask(frame, det, track)  # maybe someone has named them since
                    entry.person_id, entry.name, entry.sent_ts = r.person_id, r.name, frame.ts
                shown.append((entry.person_id, entry.name))
                continue
            r = await self.ask(frame, det, track)
            self._cache.append(SeedEntry(det.embedding, r.person_id, r.name, frame.ts))
            shown.append((r.person_id, r.name))
        return shown


class Facewatchd(Policy):
    """The daemon's own parts, wired as Daemon.run wires them, fed this stream's frames."""

    name = "facewatchd"

    def __init__(self, state_dir: Path, config: Config, embedder: SharedEmbeddings,
                 truth_of_track: dict[str, Detection]) -> None:
        super().__init__()
        self.config = config
        self.embedded = EmbeddedResolver(state_dir, config.resolver, config.detector, config.embedder, config.identity)
        self.link = LocalLink(THING, self.embedded.hub, self._resolve)
        self.cache = FaceCache(state_dir / "cache.db", config.cache, config.identity)
        self.outbox = Outbox(state_dir / "outbox.db", config.uplink.outbox_max_rows)
        self.uplink = Uplink(self.link, self.outbox, config.uplink)
        self.executor = ThreadPoolExecutor(max_workers=config.device.workers, thread_name_prefix="cv")
        self.recognizer = Recognizer(THING, embedder, self.cache, self.uplink, config.uplink,  # type: ignore[arg-type]
                                     self.executor, lambda hook, **kw: None, config.identity, config.quality)
        self.daemon = Daemon(config)  # only for apply_delta, the daemon's own handling of shadow deltas
        self.daemon.recognizer = self.recognizer
        self._truth_of_track = truth_of_track
        self._stop = asyncio.Event()
        self._sent: set[str] = set()
        self.requests = 0

    async def _resolve(self, query: FaceQuery) -> Resolution:
        self.requests += 1
        if query.face_id not in self._sent:  # a resend is not a new call
            self._sent.add(query.face_id)
            det = self._truth_of_track.get(query.track)
            self.calls.append(Call(det.person if det else None, det.visit if det else None))
        return await self.embedded.resolver.resolve(query)

    async def start(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self.link)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self.uplink.run(self._stop)), loop.create_task(self._deltas())]

        async def stop() -> None:
            self._stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        stack.push_async_callback(stop)

    async def _deltas(self) -> None:
        async for delta in self.link.deltas():  # as Daemon._apply_deltas
            clear, reported = self.daemon.apply_delta(delta)
            if clear:
                await self.link.update_shadow({"desired": clear, "reported": reported})

    async def _settle(self, done: Any) -> None:
        """Let the resolver answer and the answer come back through the shadow before the next frame."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        await self.recognizer.process(frame, update)
        await self._settle(lambda: self.uplink.pending == 0)
        return [(t.person_id, t.name) for t in tracks]

    async def end(self, tracks: list[Track]) -> None:
        for t in tracks:
            await self.recognizer.end(t)
        await self._settle(lambda: self.uplink.pending == 0)
        self.cache.close()
        self.outbox.close()
        self.embedded.close()
        self.executor.shutdown(wait=True)

    async def label(self, person_id: str, name: str) -> None:
        await self.embedded.resolver.label(person_id, name)
        await self._settle(lambda: self.cache.persons().get(person_id, name) == name)


# -- the run ------------------------------------------------------------------------------------

@dataclass
class Record:
    frame: int
    person: int
    visit: int
    shown: Shown


@dataclass
class Outcome:
    records: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    labelled_at: dict[int, int] = field(default_factory=dict)  # person → frame their name was given
    detections: int = 0
    unmatched_detections: int = 0
    missed_faces: int = 0
    frames: int = 0


async def run_stream(people: list[Person], visits: list[Visit], scene: Scene, detector: YuNetDetector,
                     embedder: SharedEmbeddings, config: Config, state: Path,
                     baselines: bool = True) -> tuple[Outcome, list[Policy]]:
    truth_of_track: dict[str, Detection] = {}
    policies: list[Policy] = [Facewatchd(state / "facewatchd", config, embedder, truth_of_track)]
    if baselines:
        policies += [PerFrame(state / "per-frame", config), SeedWorkshop(state / "seed", config),
                     PerTrack(state / "per-track", config)]
    tracker = Tracker("bench", config.tracker)
    cuts = SceneCutDetector(config.tracker.scene_cut_threshold)
    out = Outcome()
    first_visit_end = {v.person: v.end for v in visits if v.first}
    last = max(v.end for v in visits) + round(2 * FPS)
    async with AsyncExitStack() as stack:
        for p in policies:
            await p.start(stack)
        for index in range(last):
            for person, end in first_visit_end.items():
                if end == index:
                    await name_person(people[person], out, policies, visits)
                    out.labelled_at[person] = index
            image, drawn = scene.render(index)
            faces = detector.detect(image)
            frame = Frame("bench", index, index / FPS, image)
            detections: list[Detection] = []
            for face, (aligned, emb) in zip(faces, embedder.detections(image, faces)):
                d = truth(face, drawn)
                detections.append(Detection(face, aligned, emb, d.visit.person if d else None,
                                            d.visit.index if d else None))
            out.missed_faces += len(drawn) - sum(det.person is not None for det in detections)
            update = tracker.update(faces, index, frame.ts, scene_cut=cuts.is_cut(shrink(image)))
            by_face = {id(t.face): t for t in update.started + update.continued}
            tracks = [by_face[id(f)] for f in faces]
            for det, track in zip(detections, tracks):
                if det.person is not None:
                    truth_of_track.setdefault(track.id, det)
            for p in policies:
                started = time.perf_counter()
                shown = await p.frame(frame, detections, tracks, update)
                p.seconds += time.perf_counter() - started
                for det, s in zip(detections, shown):
                    if det.person is not None and det.visit is not None:
                        out.records[p.name].append(Record(index, det.person, det.visit, s))
            out.detections += len(detections)
            out.unmatched_detections += sum(det.person is None for det in detections)
            out.frames += 1
        remaining = tracker.end_all()
        for p in policies:
            await p.end(remaining)
    return out, policies


async def name_person(person: Person, out: Outcome, policies: list[Policy], visits: list[Visit]) -> None:
    """The operator names a person after their first visit: the id each policy showed most gets the name."""
    first = next(v.index for v in visits if v.person == person.index and v.first)
    for p in policies:
        ids = Counter(r.shown[0] for r in out.records[p.name] if r.visit == first and r.shown[0])
        if ids:
            await p.label(ids.most_common(1)[0][0], person.name)


# -- the numbers --------------------------------------------------------------------------------

def frames_until(records: list[Record], ok: Any) -> int | None:
    """Frames from the visit's first detected face to the first frame where `ok` holds (None: never)."""
    if not records:
        return None
    start = records[0].frame
    return next((r.frame - start for r in records if ok(r)), None)


def summarise(policy: Policy, records: list[Record], people: list[Person], visits: list[Visit],
              labelled_at: dict[int, int]) -> dict[str, Any]:
    persons_of_id: dict[str, set[int]] = defaultdict(set)
    ids_of_person: dict[int, set[str]] = defaultdict(set)
    by_visit: dict[int, list[Record]] = defaultdict(list)
    wrong = 0
    wrong_pairs: Counter[tuple[str, str]] = Counter()
    for r in records:
        by_visit[r.visit].append(r)
        pid, name = r.shown
        if pid:
            persons_of_id[pid].add(r.person)
            ids_of_person[r.person].add(pid)
        if name is not None and name != people[r.person].name:
            wrong += 1
            wrong_pairs[(people[r.person].name, name)] += 1
    first_calls = sum(1 for c in policy.calls if c.visit is not None and visits[c.visit].first)
    return_calls = sum(1 for c in policy.calls if c.visit is not None and not visits[c.visit].first)
    returns = [v for v in visits if not v.first]
    to_id = [frames_until(by_visit[v.index], lambda r: r.shown[0] is not None) for v in visits if v.first]
    named_returns = [v for v in returns if v.start >= labelled_at.get(v.person, 1 << 30)]
    to_name = [frames_until(by_visit[v.index], lambda r: r.shown[1] == people[r.person].name) for v in named_returns]
    merges = sum(len(s) - 1 for s in persons_of_id.values())
    splits = sum(len(s) - 1 for s in ids_of_person.values())
    calls = len(policy.calls)
    result: dict[str, Any] = {
        "resolver_calls": calls,
        "calls_per_visit": round(calls / len(visits), 3),
        "calls_per_person": round(calls / len(people), 3),
        "calls_per_new_person": round(first_calls / len(people), 3),
        "calls_per_return_visit": round(return_calls / len(returns), 3) if returns else None,
        "calls_unattributed": calls - first_calls - return_calls,
        "merges": merges, "splits": splits, "identity_errors": merges + splits,
        "wrong_name_faces": wrong,
        "frames_to_id_new_median": median(to_id), "never_identified_visits": sum(x is None for x in to_id),
        "frames_to_name_known_median": median(to_name), "known_visits": len(named_returns),
        "known_visits_never_named": sum(x is None for x in to_name),
        "seconds": round(policy.seconds, 1),
        # who was merged with whom, and who was shown with whose name (faces): to look at the photos
        "merged_people": sorted(sorted(people[i].name for i in s) for s in persons_of_id.values() if len(s) > 1),
        "wrong_names": [{"person": a, "shown_as": b, "faces": n} for (a, b), n in wrong_pairs.most_common()],
    }
    if isinstance(policy, Facewatchd):
        stats = policy.recognizer.stats
        result.update(resolver_requests=policy.requests, embeds=stats.embeds, cache_hits=stats.cache_hits,
                      joined_pending=stats.joined_pending, tracks=stats.tracks)
    return result


def median(values: list[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(statistics.median(known)) if known else None


def targets(policies: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    if "seed-workshop" not in policies:
        return {}
    fw, seed, per_track = policies["facewatchd"], policies["seed-workshop"], policies["per-track"]
    return {
        "facewatchd_calls_per_new_person<=1": fw["calls_per_new_person"] <= 1.0,
        "facewatchd_calls_per_return_visit==0": None if fw["calls_per_return_visit"] is None
        else fw["calls_per_return_visit"] == 0,
        "seed_calls>=10x_facewatchd": seed["resolver_calls"] >= 10 * fw["resolver_calls"],
        "facewatchd_identity_errors<=per_track": fw["identity_errors"] <= per_track["identity_errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, required=True, help="one subfolder of photos per person")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--visits", type=int, default=30, help="visits in all, first visits included")
    parser.add_argument("--min-photos", type=int, default=1, help="use only people with this many photos")
    parser.add_argument("--only-facewatchd", action="store_true", help="skip the three baseline policies")
    parser.add_argument("--no-quality-gate", action="store_true", help="facewatchd without its face quality gate "
                        "([quality] enabled = false), to compare")
    args = parser.parse_args()
    if not args.faces.is_dir():
        parser.error(f"not a folder: {args.faces}")
    cv2.setNumThreads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="visits-") as tmp:
        config = parse_config({"device": {"state_dir": tmp, "thing": THING},
                               "logging": {"format": "json", "level": "error"},
                               "quality": {"enabled": not args.no_quality_gate}})
        configure_logging(config.logging.format, config.logging.level)
        rng = np.random.default_rng(args.seed)
        detector = YuNetDetector(config.detector)
        people = load_people(args.faces, args.people, args.min_photos, rng, detector)
        if len(people) < 2:
            raise SystemExit(f"{args.faces}: need at least 2 people with a detectable face, found {len(people)}")
        visits = schedule(people, args.visits, rng)
        embedder = SharedEmbeddings(create_embedder(config.embedder))
        out, policies = asyncio.run(run_stream(people, visits, Scene(people, visits, rng), detector, embedder, config,
                                               Path(tmp), baselines=not args.only_facewatchd))
        results = {p.name: summarise(p, out.records[p.name], people, visits, out.labelled_at) for p in policies}
    fw_calls = max(1, results["facewatchd"]["resolver_calls"])
    for r in results.values():
        r["calls_vs_facewatchd"] = round(r["resolver_calls"] / fw_calls, 1)
    report = {
        "stream": {"faces_dir": str(args.faces), "seed": args.seed, "people": len(people), "visits": len(visits),
                   "return_visits": sum(not v.first for v in visits), "frames": out.frames, "fps": FPS,
                   "stream_s": round(out.frames / FPS, 1), "detections": out.detections,
                   "detections_without_truth": out.unmatched_detections, "drawn_faces_missed": out.missed_faces,
                   "max_in_frame": max_concurrent(visits), "embeddings_computed_again": embedder.computed_again,
                   "reverify_embeddings": embedder.plain},
        "policies": results,
        "targets": targets(results),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(report)
    print(json.dumps(report))


def max_concurrent(visits: list[Visit]) -> int:
    edges = sorted([(v.start, 1) for v in visits] + [(v.end, -1) for v in visits], key=lambda e: (e[0], e[1]))
    here = most = 0
    for _, step in edges:
        here += step
        most = max(most, here)
    return most


def print_table(r: dict[str, Any]) -> None:
    s = r["stream"]
    print(f"{s['people']} people, {s['visits']} visits ({s['return_visits']} returns), {s['frames']} frames "
          f"({s['stream_s']} s), up to {s['max_in_frame']} in frame; {s['detections']} faces detected, "
          f"{s['drawn_faces_missed']} drawn faces missed, {s['detections_without_truth']} detections of nobody")
    cols = [("calls", "resolver_calls"), ("x fw", "calls_vs_facewatchd"), ("/visit", "calls_per_visit"),
            ("/person", "calls_per_person"), ("/new", "calls_per_new_person"), ("/return", "calls_per_return_visit"),
            ("merges", "merges"), ("splits", "splits"), ("wrong names", "wrong_name_faces"),
            ("frames to id", "frames_to_id_new_median"), ("frames to name", "frames_to_name_known_median")]
    print(f"{'policy':<15}" + "".join(f"{c:>{max(8, len(c) + 2)}}" for c, _ in cols))
    for name, m in r["policies"].items():
        cells = []
        for c, key in cols:
            v = m[key]
            text = "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
            cells.append(f"{text:>{max(8, len(c) + 2)}}")
        print(f"{name:<15}" + "".join(cells))
    print("targets: " + ", ".join(f"{k} {'ok' if v else ('n/a' if v is None else 'MISSED')}"
                                  for k, v in r["targets"].items()))
    print(f"{r['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
