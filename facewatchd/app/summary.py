"""What a run did, in one object: the line `facewatchd run` prints at its end, and what the tests read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from facewatchd.pipeline.camera import Camera
from facewatchd.pipeline.recognizer import Recognizer
from facewatchd.pipeline.regions import RegionPlanner
from facewatchd.pipeline.uplink import Uplink


@dataclass
class Summary:
    frames: int
    frames_dropped: int
    frames_unreadable: int
    frames_gated: int  # not detected: nothing moved in an empty scene
    frames_in_regions: int  # detected only around live tracks and motion (pipeline/regions.py)
    faces: int
    tracks: int
    tracks_not_worth_naming: int  # ended with no view that passed the quality gate: never a person
    embeds: int
    reverifications: int  # named or pending tracks embedded again (the cheap check, a beat, a jump)
    resolver_calls: int
    resolver_retries: int
    cache_hits: int
    pending: int
    link_online: bool
    persons: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def summarise(cameras: Iterable[Camera], planners: Iterable[RegionPlanner], rec: Recognizer | None,
              uplink: Uplink | None, link_online: bool, seconds: float) -> Summary:
    cameras = list(cameras)
    persons: dict[str, dict[str, Any]] = {}
    if rec is not None:
        persons = {pid: {"name": rec.stats.names.get(pid), "tracks": n}
                   for pid, n in sorted(rec.stats.person_tracks.items())}
    up = uplink.stats if uplink else None
    return Summary(
        frames=sum(c.stats.frames for c in cameras),
        frames_dropped=sum(c.stats.dropped for c in cameras),
        frames_unreadable=sum(c.stats.unreadable for c in cameras),
        frames_gated=sum(c.stats.gated for c in cameras),
        frames_in_regions=sum(p.region_frames for p in planners),
        faces=rec.stats.faces if rec else 0,
        tracks=rec.stats.tracks if rec else 0,
        embeds=rec.stats.embeds if rec else 0,
        reverifications=rec.stats.reverifications if rec else 0,
        tracks_not_worth_naming=rec.stats.tracks_gated if rec else 0,
        resolver_calls=rec.stats.resolver_calls if rec else 0,
        resolver_retries=up.resent if up else 0,
        cache_hits=rec.stats.cache_hits if rec else 0,
        pending=uplink.pending if uplink else 0,
        link_online=link_online,
        persons=persons,
        seconds=round(seconds, 2),
    )
