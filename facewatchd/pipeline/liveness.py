"""Liveness evidence for the tracks that a decision needs it for, and for no others.

A plugin that acts on faces (the door) says which tracks it needs evidence for through the
`liveness_demand` hook: its cameras and the names it acts on. `[liveness] cameras` adds cameras whose every
recognised track is checked. Each frame, every such track gets a `LivenessSample`:
- a model score (facewatchd/vision/liveness.py: 0 attack … 1 live);
- a nose parallax against its landmarks a few frames ago (`PARALLAX_SPANS`; facewatchd/vision/parallax.py:
  about 0 for a flat picture, more for a head that turns);
- whether straight edges close a frame round the face (facewatchd/vision/border.py: a card, a bezel);
- whether the recognizer embedded and verified this same frame's view as the track's person, so a decision
  can ask that the frames judged live are the frames of the face that was verified, not another one's;
kept on the track (the latest EVIDENCE_KEPT) and carried by its events, and a `liveness_checked` event
fires so the decision can be taken on the frame the evidence arrived. Nothing here decides what is
live: that is the policy of whoever asked (plugins/door/liveness.py). Who a face is never depends on it.

With no demand and no configured camera, nothing is built: no model is loaded, no frame pays.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable, Iterable

import numpy as np

from facewatchd.events import FaceEvent, LivenessSample
from facewatchd.pipeline.camera import Frame
from facewatchd.pipeline.demand import TrackDemand, wanted
from facewatchd.pipeline.tracker import Track
from facewatchd.vision.border import framed
from facewatchd.vision.liveness import LivenessConfig, LivenessModel
from facewatchd.vision.parallax import nose_parallax

EVIDENCE_KEPT = 32  # latest scores and parallaxes per track that the events carry
# Landmarks this many frames back are compared with the current ones and the largest parallax kept: a head
# turns slowly, so a longer span sees more of it (the live clip's speaker shows 0.2 by his 15th frame at 30
# fps), while a flat picture's stays at landmark noise (at most 0.16 in bench/liveness.py's close-ups)
PARALLAX_SPANS = (5, 10, 15)


LivenessDemand = TrackDemand  # the name plugins written before the evidence demand import


class LivenessWatch:
    def __init__(self, config: LivenessConfig, demands: Iterable[TrackDemand], executor: Executor,
                 event: Callable[[Track, str], FaceEvent], fire: Callable[..., None],
                 model: LivenessModel | None = None) -> None:
        self.demands = list(demands)
        if config.cameras:
            self.demands.append(TrackDemand(frozenset(config.cameras)))
        self.model = model or LivenessModel(config)  # a missing or wrong model file fails here, at start
        self.executor = executor
        self._event = event
        self._fire = fire
        self.checked = 0  # face views scored

    @classmethod
    def build(cls, config: LivenessConfig, demands: list[TrackDemand], executor: Executor,
              event: Callable[[Track, str], FaceEvent], fire: Callable[..., None]) -> "LivenessWatch | None":
        """None when nobody asks for liveness: then no model is loaded and no frame is checked."""
        if not demands and not config.cameras:
            return None
        return cls(config, demands, executor, event, fire)

    def wants(self, track: Track) -> bool:
        return wanted(self.demands, track)

    async def observe(self, frame: Frame, tracks: list[Track]) -> None:
        """Check this frame's view of every wanted track (off the loop, one call for all of them)."""
        wanted = [t for t in tracks if self.wants(t)]
        if not wanted:
            return
        boxes = [t.face.box for t in wanted]
        views = await asyncio.get_running_loop().run_in_executor(self.executor, self._check, frame.image, boxes)
        self.checked += len(wanted)
        for track, (score, edged) in zip(wanted, views):
            track.landmarks.append(np.asarray(track.face.landmarks, np.float64))
            del track.landmarks[:-(PARALLAX_SPANS[-1] + 1)]
            spans = [span for span in PARALLAX_SPANS if len(track.landmarks) > span]
            parallax = max((nose_parallax(track.landmarks[-1 - span], track.landmarks[-1]) for span in spans),
                           default=None)
            verified = track.embedded_frame == frame.index  # embedded at this frame, and still the person
            track.liveness.append(LivenessSample(frame.ts, frame.index, score, parallax, edged, verified))
            del track.liveness[:-EVIDENCE_KEPT]
            self._fire("liveness_checked", event=self._event(track, "liveness"))

    def _check(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[tuple[float, bool]]:
        return [(self.model.score(image, box), framed(image, box)) for box in boxes]
