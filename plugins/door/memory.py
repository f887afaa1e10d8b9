"""What the door remembers of each track while it decides: one grant at most, each denial said once."""

from __future__ import annotations

from dataclasses import dataclass, field

from facewatchd.events import FaceEvent
from plugins.door.liveness import LivenessTally


@dataclass
class TrackMemory:
    last_reason: str | None = None
    waiting: FaceEvent | None = None  # named and allowed, but not enough agreeing embeddings or liveness yet
    granted: bool = False
    attack: bool = False  # judged a presentation attack: never granted
    liveness: LivenessTally = field(default_factory=LivenessTally)
