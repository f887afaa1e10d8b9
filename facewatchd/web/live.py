"""The review page's "now": who is in view on each camera, fed by the same hooks as every plugin."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl


@dataclass
class Sighting:
    camera: str
    track_id: str
    ts: float
    dwell_s: float = 0.0
    person_id: str | None = None
    name: str | None = None
    similarity: float = 0.0


@dataclass
class Live:
    """What the cameras see, from the same hooks every plugin gets (registered like one): who is in view
    now, per camera, and the recent sightings of each person. No frame is kept, only ids and times."""

    recent_per_person: int = 5
    now: dict[str, dict[str, Sighting]] = field(default_factory=dict)  # camera → track → sighting
    seen: "OrderedDict[str, deque[Sighting]]" = field(default_factory=OrderedDict)
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _touch(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def _update(self, event: FaceEvent) -> None:
        self.now.setdefault(event.camera, {})[event.track_id] = Sighting(
            event.camera, event.track_id, event.ts, 0.0, event.person_id, event.name, event.similarity)
        self._touch()

    @hookimpl
    async def face_detected(self, event: FaceEvent) -> None:
        self._update(event)

    @hookimpl
    async def face_recognised(self, event: FaceEvent) -> None:
        self._update(event)

    @hookimpl
    async def unknown_face(self, event: FaceEvent) -> None:
        self._update(event)

    @hookimpl
    async def track_ended(self, event: TrackEnded) -> None:
        self.now.get(event.face.camera, {}).pop(event.face.track_id, None)
        f = event.face
        if f.person_id:
            history = self.seen.setdefault(f.person_id, deque(maxlen=self.recent_per_person))
            history.appendleft(Sighting(f.camera, f.track_id, time.time(), event.dwell_s, f.person_id, f.name))
            self.seen.move_to_end(f.person_id)
            while len(self.seen) > 20_000:
                self.seen.popitem(last=False)
        self._touch()

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {camera: [{"track": s.track_id, "person_id": s.person_id, "name": s.name,
                          "similarity": round(s.similarity, 3)} for s in tracks.values()]
                for camera, tracks in sorted(self.now.items())}
