"""The data that hooks receive: one small, immutable event per thing that happened to a face."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LivenessSample:
    """What one frame of a track showed of liveness (facewatchd/pipeline/liveness.py)."""

    ts: float
    frame: int  # the camera's frame index: samples are counted by it (a clock can step back, frames cannot)
    score: float  # the liveness models' live probability, 0 (attack) to 1 (live)
    parallax: float | None  # nose parallax against a few frames before, in inter-ocular distances (a flat
    # picture's stays near 0); None until the track has that many frames
    framed: bool  # long straight edges close a frame round the face (a card's edge, a bezel)
    verified: bool  # this very frame's view was embedded and verified as the track's person


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
    # Liveness evidence of this track's own latest frames, oldest first, only where a decision asked for it
    # (LivenessDemand); empty: not checked. What counts as live is the deciding plugin's policy.
    liveness: tuple["LivenessSample", ...] = ()


@dataclass(frozen=True, slots=True)
class TrackEnded:
    face: FaceEvent
    dwell_s: float
    frames: int
