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
    similarity: float = 0.0  # to the cached or resolved face that named the track
    agreed_frames: int = 0  # frames of this track that have matched the person so far
    face_id: str | None = None  # the resolver query id, for faces that went up
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    score: float = 0.0  # detector score
    crop_jpeg: bytes | None = None  # the face crop (not the frame), when one was made
    source: str = ""  # "cache" or "resolver" for recognitions


@dataclass(frozen=True, slots=True)
class TrackEnded:
    face: FaceEvent
    dwell_s: float
    frames: int
