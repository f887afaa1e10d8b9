"""The data that hooks receive: one small, immutable event per thing that happened to a face."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FaceEvent:
    camera: str
    track_id: str
    ts: float  # when it happened, in the camera's clock
    person_id: str | None = None
    name: str | None = None
    similarity: float = 0.0  # the track's own latest verified similarity to the person (see evidence)
    agreed_frames: int = 0  # frames this track has followed the person (not evidence: see below)
    # (ts, similarity) of this track's own embeddings verified against the person, oldest first: each
    # min(cosine to a view of the person, the trust of that view), so never stronger than the view it
    # matched. Access control counts the recent ones at its own threshold.
    evidence: tuple[tuple[float, float], ...] = ()
    face_id: str | None = None  # the resolver query id, for faces that went up
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    score: float = 0.0  # detector score
    crop_jpeg: bytes | None = None  # the face crop (not the frame), when one was made
    source: str = ""  # "cache" or "resolver" when named, "verified" for a fresh verified embedding
    gone: bool = False  # the face had left when this came (an answer after its track ended): nobody to act on


@dataclass(frozen=True, slots=True)
class TrackEnded:
    face: FaceEvent
    dwell_s: float
    frames: int
