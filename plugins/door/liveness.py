"""The door's liveness policy: is the face that would open the door a live person? Logic only, no I/O.

Evidence comes with each event of a demanded track (FaceEvent.liveness: see facewatchd/pipeline/liveness.py),
one sample per frame: the models' score, the nose parallax, and whether edges frame the face. The door asks:
- the track is not an attack: `attack_frames` scores below `attack_threshold`, or `framed_frames` frames
  with a closed frame of edges round the face (a card, a bezel), make the whole track an attack, never
  granted whatever later frames say;
- `live_frames` of the track's frames within the evidence window scored at least `live_threshold`;
- its landmarks showed depth within the window: a nose parallax of at least `min_parallax` (a flat
  picture's stays near 0 however it is turned; a live head that turns or nods does not). A face that
  keeps perfectly still has not shown it yet: the door waits, it does not deny.
The thresholds' measured meaning is in etc/facewatchd.toml (bench/liveness.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facewatchd.events import FaceEvent

Verdict = Literal["live", "attack", "wait"]


class DoorLivenessConfig(BaseModel):
    """[plugins.door.liveness]"""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: a photo of an allowlisted person opens the door")
    live_threshold: float = Field(0.7, gt=0, lt=1, description="a frame's model score at or above this is live")
    live_frames: int = Field(3, ge=1, le=32, description="frames judged live needed within evidence_window_s")
    attack_threshold: float = Field(0.2, ge=0, lt=1, description="a frame's model score below this is an attack")
    attack_frames: int = Field(2, ge=1, le=32, description="frames judged an attack that make the track one")
    framed_frames: int = Field(2, ge=0, le=32, description="frames with a frame of edges round the face (a card, "
                               "a bezel) that make the track an attack; 0: not asked")
    min_parallax: float = Field(0.0, ge=0, le=2, description="depth the landmarks must show within "
                                "evidence_window_s, in inter-ocular distances; 0: not asked")


@dataclass
class LivenessTally:
    """What the door has counted of one track's frames (events repeat earlier frames: each counts once)."""

    counted_until: float = float("-inf")
    attack_frames: int = 0
    framed_frames: int = 0
    lowest: float = 1.0


def judge(config: DoorLivenessConfig, event: FaceEvent, tally: LivenessTally,
          window_s: float) -> tuple[Verdict, str]:
    """(verdict, detail with the scores) for the track as this event shows it."""
    for sample in event.liveness:
        if sample.ts > tally.counted_until:
            tally.counted_until = sample.ts
            tally.lowest = min(tally.lowest, sample.score)
            tally.attack_frames += sample.score < config.attack_threshold
            tally.framed_frames += sample.framed
    if tally.attack_frames >= config.attack_frames:
        return "attack", (f"{tally.attack_frames} frame(s) judged an attack: live score down to "
                          f"{tally.lowest:.3f} < {config.attack_threshold}")
    if config.framed_frames and tally.framed_frames >= config.framed_frames:
        return "attack", f"{tally.framed_frames} frame(s) with edges all round the face: a card or a screen"
    since = event.ts - window_s
    recent = [sample for sample in event.liveness if sample.ts >= since]
    live = sum(1 for sample in recent if sample.score >= config.live_threshold)
    if live < config.live_frames:
        scores = ", ".join(f"{sample.score:.2f}" for sample in recent[-4:]) or "none"
        return "wait", f"{live} of {config.live_frames} recent frames judged live (scores {scores}; live at " \
                       f"{config.live_threshold})"
    depth = max((sample.parallax or 0.0 for sample in recent), default=0.0)
    if depth < config.min_parallax:
        return "wait", f"no depth seen: nose parallax {depth:.3f} < {config.min_parallax} (a flat picture's stays near 0)"
    return "live", f"{live} recent frames judged live, parallax {depth:.3f}"
