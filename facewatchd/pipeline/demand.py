"""Which tracks a decision acts on: a plugin that acts on faces (the door) names its cameras and names.

Two stages serve such tracks more than others: liveness (pipeline/liveness.py checks their every frame)
and the recognizer (it embeds them again on a fixed beat, `identity.reverify_frames`, so the decision has
fresh, independent embeddings; other tracks are embedded again only when their appearance changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from facewatchd.pipeline.tracker import Track


@dataclass(frozen=True)
class TrackDemand:
    """Named tracks on `cameras` (None: every camera) whose name is in `names` (case-insensitive; None:
    every recognised track, named or not)."""

    cameras: frozenset[str] | None = None
    names: frozenset[str] | None = None

    def wants(self, track: Track) -> bool:
        if track.state != "known" or (self.cameras is not None and track.camera not in self.cameras):
            return False
        return self.names is None or (track.name is not None and track.name.casefold() in self.names)


def wanted(demands: Iterable[TrackDemand], track: Track) -> bool:
    return any(d.wants(track) for d in demands)
