"""IoU tracker: associates faces across frames so a person walking past is one track, not one per frame.

Greedy matching by IoU (highest first); a track ends after `max_missed` frames without a match.
Recognition state lives on the Track too, so the recognizer never has to look tracks up elsewhere.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.events import LivenessSample
from facewatchd.vision.detector import Face
from facewatchd.vision.rects import iou

__all__ = ["SceneCutDetector", "Track", "TrackUpdate", "Tracker", "TrackerConfig", "iou"]


class TrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iou_threshold: float = Field(0.25, gt=0, lt=1)
    max_missed: int = Field(10, ge=0, le=1000, description="frames a track survives without a detection")
    max_scale_change: float = Field(2.0, ge=1, description="a box this much larger or smaller is another face")
    scene_cut_threshold: float = Field(0.12, ge=0, le=1, description="colour-histogram change (0-1) that ends "
                                       "every track, so a cut in edited video never carries a track to another "
                                       "face; 0 disables")


@dataclass(eq=False)
class Track:
    id: str
    camera: str
    face: Face
    first_frame: int
    last_frame: int
    first_ts: float
    last_ts: float
    hits: int = 1
    missed: int = 0
    # recognition state, owned by the recognizer
    state: str = "new"  # new → collecting → pending → known (person_id set), or known at once from the cache;
    # "unresolvable" when the resolver refused its face (no face in the crop): it does not ask again
    person_id: str | None = None
    name: str | None = None
    similarity: float = 0.0
    face_id: str | None = None
    embeds: int = 0
    agreed_frames: int = 0
    best_quality: float = 0.0
    embedded_quality: float = 0.0
    best: object | None = field(default=None, repr=False)  # the recognizer's best candidate view
    first_view: object | None = field(default=None, repr=False)  # and the view it started with
    seen_with: set[str] = field(default_factory=set, repr=False)  # tracks in the same frame: other people
    embedding: np.ndarray | None = field(default=None, repr=False)  # the track's latest own embedding
    embedded_frame: int = -1  # the frame of that embedding
    embedded_ts: float = float("-inf")  # and its time
    appearance: np.ndarray | None = field(default=None, repr=False)  # vision/appearance.py of that view
    previous_box: tuple[float, float, float, float] | None = None  # the box one frame ago
    evidence: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (ts, proven similarity)
    joined: bool = False  # pending on another track's query, not its own
    origin: str | None = None  # the face id of the cache view or resolver answer that named it
    splits: int = 0
    crossing: str | None = None  # "overlap" while its box overlaps another face's, then "apart"
    root_id: str = ""  # the id the tracker gave; split parts are <root_id>.s<n>
    gone: bool = False  # the face has left: events from now on are about a face no longer in view
    not_worth_naming: bool = False  # its best view so far failed the quality gate (said once, as unknown)
    # liveness evidence, kept only for the tracks a decision needs it for (pipeline/liveness.py)
    liveness: list[LivenessSample] = field(default_factory=list, repr=False)
    landmarks: list[np.ndarray] = field(default_factory=list, repr=False)  # the latest few, for the parallax

    def split(self, frame_index: int, ts: float) -> "Track":
        """End this track's identity here (its face no longer verifies): returns the part that ends, and
        this track, the one the tracker keeps following, starts again as a new track with no identity."""
        ended = dataclasses.replace(self, seen_with=set(self.seen_with), evidence=list(self.evidence),
                                    liveness=list(self.liveness))
        self.splits += 1
        root = self.root_id or self.id
        fresh = Track(f"{root}.s{self.splits}", self.camera, self.face, frame_index, frame_index, ts, ts,
                      splits=self.splits, root_id=root)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
        return ended


class SceneCutDetector:
    """Detects a cut between consecutive frames by the total-variation distance of coarse colour
    histograms (about 0.01-0.04 between frames of one shot, 0.15 and more across a cut)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def is_cut(self, small: np.ndarray) -> bool:
        """`small`: the frame shrunk (motion.shrink), as the motion gate sees it."""
        if self.threshold <= 0:
            return False
        hist = cv2.calcHist([small], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
        hist /= max(1.0, float(hist.sum()))
        previous, self._previous = self._previous, hist
        return previous is not None and 0.5 * float(np.abs(hist - previous).sum()) > self.threshold


@dataclass
class TrackUpdate:
    started: list[Track]
    continued: list[Track]
    ended: list[Track]


class Tracker:
    def __init__(self, camera: str, config: TrackerConfig | None = None) -> None:
        self.camera = camera
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._run = np.random.default_rng().integers(0, 16**6)  # keeps track ids unique across restarts

    def _new_id(self) -> str:
        return f"{self.camera}-{self._run:06x}-{next(self._ids)}"

    def _similar_size(self, a: Face, b: Face) -> bool:
        ratio = (a.box[2] * a.box[3]) / max(1e-6, b.box[2] * b.box[3])
        return 1 / self.config.max_scale_change**2 <= ratio <= self.config.max_scale_change**2

    def update(self, faces: list[Face], frame_index: int, ts: float, scene_cut: bool = False) -> TrackUpdate:
        cut_ended = self.end_all() if scene_cut else []
        pairs = sorted(
            ((iou(t.face.box, f.box), ti, fi) for ti, t in enumerate(self.tracks) for fi, f in enumerate(faces)
             if self._similar_size(t.face, f)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_f: set[int] = set()
        continued: list[Track] = []
        for score, ti, fi in pairs:
            if score < self.config.iou_threshold:
                break
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            t = self.tracks[ti]
            t.face, t.last_frame, t.last_ts, t.missed = faces[fi], frame_index, ts, 0
            t.hits += 1
            continued.append(t)
        ended: list[Track] = cut_ended
        alive: list[Track] = []
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                t.missed += 1
                if t.missed > self.config.max_missed:
                    ended.append(t)
                    continue
            alive.append(t)
        started = [Track(self._new_id(), self.camera, f, frame_index, frame_index, ts, ts)
                   for fi, f in enumerate(faces) if fi not in used_f]
        self.tracks = alive + started
        return TrackUpdate(started, continued, ended)

    def end_all(self) -> list[Track]:
        ended, self.tracks = self.tracks, []
        return ended
