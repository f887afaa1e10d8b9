"""The door's liveness policy: is the face that would open the door a live person? Logic only, no I/O.

Evidence comes with each event of a demanded track (FaceEvent.liveness: see facewatchd/pipeline/liveness.py),
one sample per checked frame: the models' score, the nose parallax, whether edges frame the face, and
whether that frame's view was the one verified as the person. The door asks:
- the track is not an attack: `attack_frames` scores below `attack_threshold`, or `framed_frames` frames
  with a closed frame of edges round the face (a card, a bezel), make the whole track an attack, never
  granted whatever later frames say;
- the latest `live_frames` checked frames, one after the other up to now, were all judged live (score at
  `live_threshold`, nothing framed), and the view verified as the person is among them: the live face is
  the face that was recognised. A photo shown for the embeddings and lowered for a live stranger's face
  breaks the run between the two; a picture whose scores hover around the threshold rarely holds a run;
- the track has shown depth: a nose parallax of at least `min_parallax` in one of its frames (a flat
  picture's stays near 0 however it is turned; a live head that turns or nods does not).
A face that has not shown these yet is waited for, not denied: the next frames may.
Samples are counted by frame index, never by time: a clock stepped back must not hide an attack frame.
The thresholds' measured meaning is in etc/facewatchd.toml (bench/liveness.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facewatchd.events import FaceEvent, LivenessSample

Verdict = Literal["live", "attack", "wait"]


class DoorLivenessConfig(BaseModel):
    """[plugins.door.liveness]"""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: a photo of an allowlisted person opens the door")
    live_threshold: float = Field(0.6, gt=0, lt=1, description="a frame's model score at or above this is live")
    live_frames: int = Field(5, ge=1, le=32, description="the latest frames, one after the other, that must all "
                             "be judged live, the frame verified as the person among them")
    attack_threshold: float = Field(0.2, ge=0, lt=1, description="a frame's model score below this is an attack")
    attack_frames: int = Field(2, ge=1, le=32, description="frames judged an attack that make the track one")
    framed_frames: int = Field(2, ge=0, le=32, description="frames with a frame of edges round the face (a card, "
                               "a bezel) that make the track an attack; 0: not asked")
    min_parallax: float = Field(0.2, ge=0, le=2, description="depth the track must have shown, in "
                                "inter-ocular distances (nose parallax); 0: not asked")
    block_s: float = Field(60.0, ge=0, le=86400, description="after an attack, the person it showed may not open "
                           "the door from that camera for this long (a retry is a new track)")


@dataclass
class LivenessTally:
    """What the door has counted of one track's frames (events repeat earlier frames: each counts once)."""

    counted_frame: int = -1
    attack_frames: int = 0
    framed_frames: int = 0
    lowest: float = 1.0
    depth: float = 0.0  # the largest nose parallax seen


def judge(config: DoorLivenessConfig, event: FaceEvent, tally: LivenessTally) -> tuple[Verdict, str]:
    """(verdict, detail with the scores) for the track as this event shows it."""
    for sample in event.liveness:
        if sample.frame > tally.counted_frame:
            tally.counted_frame = sample.frame
            tally.lowest = min(tally.lowest, sample.score)
            tally.attack_frames += sample.score < config.attack_threshold
            tally.framed_frames += sample.framed
            tally.depth = max(tally.depth, sample.parallax or 0.0)
    if tally.attack_frames >= config.attack_frames:
        return "attack", (f"{tally.attack_frames} frame(s) judged an attack: live score down to "
                          f"{tally.lowest:.3f} < {config.attack_threshold}")
    if config.framed_frames and tally.framed_frames >= config.framed_frames:
        return "attack", f"{tally.framed_frames} frame(s) with edges all round the face: a card or a screen"
    run = live_run(config, event.liveness)
    scores = ", ".join(f"{sample.score:.2f}" for sample in event.liveness[-4:]) or "none"
    if len(run) < config.live_frames:
        return "wait", (f"{len(run)} of {config.live_frames} latest frames judged live in a row (scores {scores}; "
                        f"live at {config.live_threshold})")
    if not any(sample.verified for sample in run):
        return "wait", "the frames judged live are not the frames whose face was verified"
    if tally.depth < config.min_parallax:
        return "wait", (f"no depth seen: nose parallax up to {tally.depth:.3f} < {config.min_parallax} "
                        "(a flat picture's stays near 0)")
    return "live", f"{len(run)} latest frames judged live (scores {scores}), parallax up to {tally.depth:.3f}"


def live_run(config: DoorLivenessConfig, samples: tuple[LivenessSample, ...]) -> list[LivenessSample]:
    """The latest samples, one frame after the other and up to the newest, all judged live."""
    run: list[LivenessSample] = []
    for sample in reversed(samples):
        live = sample.score >= config.live_threshold and not sample.framed
        if not live or (run and run[-1].frame - sample.frame > 1):
            break
        run.append(sample)
    return run[::-1]
