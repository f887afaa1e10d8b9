"""Identity decisions: who a face is, from its similarities to the persons we know. No I/O.

A name is access control, so the rules here are the product's safety rules, in one place, used by the
device cache (what a device names on its own), the resolver core (what the shared collection names, or
creates), the recognizer's track checks and, through the evidence it reports, the door.

- **Naming holds at scale.** A stranger compared with G faces (a person's templates or cached views
  each count) is falsely named with a probability of about G times the single-comparison false match
  rate (FMR) at the threshold, so a fixed threshold that is safe for 10 faces names half of all
  strangers at 1,000. The naming threshold therefore rises with the number of faces compared: it is
  SFace's impostor tail at FMR = `fpir / G` (measured on LFW: `impostor_threshold`), never below
  `name_threshold`.
- **The uncertain band.** A face below the naming threshold but above `new_below` is neither merged into
  its nearest person nor silently treated as nobody: the resolver makes it a new person marked
  "possibly X", for review.
- **Splits on one camera are linked.** A new person whose nearest person (at `link_similarity` or above,
  below `new_below`) was last seen on the same camera within `link_window_s` is most likely that person
  from another angle (a profile, a dark frame): it is marked "possibly X" too, for review, never merged.
- **Learning is stricter than naming.** A view joins a person's templates only at `learn_threshold`,
  so one false match never becomes a view that matches strangers from then on.
- **Tracks are re-verified.** Every embedding a track makes must stay with the track's person
  (`verify_threshold`); a track is re-embedded as soon as its face stops looking like the view last
  embedded (`reverify_resemblance`, a cheap check that is never evidence), whenever its box jumps, at
  least every `reverify_max_s`, and every `reverify_frames` frames where a decision acts on it (the door),
  so a face replaced in place by another is split off, not named as the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# SFace's impostor score tail (flip-averaged embeddings), measured on LFW's development half: 14.4 M
# different-person pairs of 5,373 images. The cosine at which one comparison is a false match with
# probability FMR is close to linear in log10(FMR): 0.366 at 1e-3, 0.422 at 1e-4, 0.472 at 1e-5, 0.521
# at 1e-6. Below 1e-6 there are too few pairs to say, so the fit stops there.
_TAIL_AT_1E3 = 0.366
_TAIL_PER_DECADE = 0.052
_TAIL_LOWEST_FMR = 1e-6


def impostor_threshold(fmr: float) -> float:
    """The SFace cosine at which a single comparison falsely matches with probability `fmr`."""
    fmr = min(1e-3, max(_TAIL_LOWEST_FMR, fmr))
    return _TAIL_AT_1E3 + _TAIL_PER_DECADE * math.log10(1e-3 / fmr)


class IdentityConfig(BaseModel):
    """`[identity]`: the thresholds (SFace cosine) that decide who a face is, everywhere."""

    model_config = ConfigDict(extra="forbid")

    name_threshold: float = Field(0.50, gt=0, lt=1, description="the least similarity that names a face as a "
                                  "known person, with few persons known; it rises with their number (fpir)")
    # Stricter than the single-photo bench (bench/openset.py) would pick, because a camera's faces are
    # worse than LFW's: in bench/visits.py (200 people, 400 visits, faces entering at the edge, tilted,
    # lit differently) strangers matched someone at up to 0.49 while few were known. With the floor at
    # 0.42, fpir 0.005 named three newcomers as someone else, fpir 0.001 still four in another seed; a
    # floor of 0.50 with fpir 0.001 named nobody wrongly in either seed. A wrong name is worse than a
    # missed one.
    fpir: float | None = Field(0.001, gt=0, le=0.1, description="share of strangers that may be named as "
                               "someone, whatever the number of persons known: the naming threshold rises to "
                               "keep it (SFace's calibration); none keeps name_threshold fixed")
    new_below: float = Field(0.363, gt=0, lt=1, description="below this a face is surely someone new; between "
                             "this and the naming threshold it is a new person marked \"possibly X\"")
    link_similarity: float | None = Field(0.25, gt=0, lt=1, description="a new person this similar (below "
                                          "new_below) to a person last seen on the same camera within link_window_s "
                                          "is marked \"possibly\" that person; none: no such link")
    link_window_s: float = Field(300.0, gt=0, description="how recent (s) that person's last sighting on the camera "
                                 "must be")
    learn_threshold: float = Field(0.55, gt=0, lt=1, description="a view is learnt as another template of a "
                                   "person only at or above this (stricter than naming)")
    verify_threshold: float = Field(0.363, gt=0, lt=1, description="each new embedding of a named track must reach "
                                    "this against its person, or the track is split and recognised afresh")
    reverify_frames: int = Field(10, ge=1, le=1000, description="a track a decision acts on (a door's allowlisted "
                                 "names) is embedded again this often (frames): fresh evidence for the decision")
    reverify_max_s: float = Field(2.0, gt=0, le=3600, description="any named or pending track is embedded again "
                                  "at least this often (seconds), whatever its appearance")
    reverify_resemblance: float = Field(0.7, ge=0, le=1, description="a named or pending track whose face's "
                                        "appearance (vision/appearance.py) falls below this against its last "
                                        "embedded view has changed: it is embedded again, at most every "
                                        "reverify_change_frames frames; 1: at every frame; 0: never")
    reverify_change_frames: int = Field(10, ge=1, le=1000, description="how often (frames) a face that keeps "
                                        "changing (a head turning, gestures) is embedded again")
    reverify_unlike: float = Field(0.4, ge=0, le=1, description="a face this unlike its last embedded view is "
                                   "likely another face: it is embedded again at once")
    reverify_jump: float = Field(0.5, gt=0, description="a box that moves by this share of its size, or grows or "
                                 "shrinks by 1 + this, in one frame is embedded and verified at once")

    @model_validator(mode="after")
    def _ordered(self) -> "IdentityConfig":
        if not self.new_below <= self.name_threshold <= self.learn_threshold:
            raise ValueError(f"new_below <= name_threshold <= learn_threshold must hold, got {self.new_below:g}, "
                             f"{self.name_threshold:g}, {self.learn_threshold:g}")
        if self.link_similarity is not None and self.link_similarity >= self.new_below:
            raise ValueError(f"link_similarity must be < new_below, got {self.link_similarity:g} and {self.new_below:g}")
        return self

    @property
    def search_threshold(self) -> float:
        """The least similarity a search must report: the uncertain band's, or the weaker link's."""
        return self.new_below if self.link_similarity is None else min(self.new_below, self.link_similarity)

    def naming_threshold(self, compared: int) -> float:
        """The least similarity that names a face compared with `compared` faces (templates, views)."""
        if self.fpir is None:
            return self.name_threshold
        return max(self.name_threshold, impostor_threshold(self.fpir / max(1, compared)))


@dataclass(frozen=True, slots=True)
class Decision:
    """Who a face is: `named` (person_id), `uncertain` (a new person, possibly person_id) or `new`."""

    kind: Literal["named", "uncertain", "new"]
    person_id: str | None  # named: the person; uncertain: the nearest person; new: None
    similarity: float  # to the nearest allowed person (-1 when there is none)
    threshold: float  # the naming threshold this decision used
    nearest: str | None = None  # new: the nearest person below new_below (a candidate for a weak link)

    @property
    def named(self) -> bool:
        return self.kind == "named"


def decide(best: tuple[str, float] | None, compared: int, config: IdentityConfig) -> Decision:
    """The decision for a face whose nearest allowed person is `best` (person id, similarity), after
    comparing it with `compared` faces."""
    threshold = config.naming_threshold(compared)
    if best is None:
        return Decision("new", None, -1.0, threshold)
    person_id, similarity = best
    if similarity >= threshold:
        return Decision("named", person_id, similarity, threshold)
    if similarity >= config.new_below:
        return Decision("uncertain", person_id, similarity, threshold)
    return Decision("new", None, similarity, threshold, person_id)


def weak_link(decision: Decision, last_seen_there: float | None, now: float, config: IdentityConfig) -> str | None:
    """The person a new face is "possibly", though below the uncertain band: its nearest person at
    link_similarity or above, last seen on the same camera (`last_seen_there`) within link_window_s."""
    if (decision.kind != "new" or decision.nearest is None or config.link_similarity is None
            or decision.similarity < config.link_similarity or last_seen_there is None):
        return None
    return decision.nearest if now - last_seen_there <= config.link_window_s else None


def box_jumped(previous: tuple[float, float, float, float], current: tuple[float, float, float, float],
               jump: float) -> bool:
    """True when a box moved by `jump` of its size, or changed size by a factor of 1 + jump, in one step."""
    px, py, pw, ph = previous
    cx, cy, cw, ch = current
    size = max(1.0, (pw * ph) ** 0.5)
    moved = math.hypot((cx + cw / 2) - (px + pw / 2), (cy + ch / 2) - (py + ph / 2)) / size
    ratio = max(cw * ch, 1e-6) / max(pw * ph, 1e-6)
    return moved > jump or not 1 / (1 + jump) ** 2 <= ratio <= (1 + jump) ** 2
