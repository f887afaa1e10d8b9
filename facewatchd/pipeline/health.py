"""How each camera is doing, from its running counters: frames in and out per second, drops, the
detector's and the embedder's time per call, the resolver link's state and the outbox's depth.

The figures (`CameraHealth`) are pure arithmetic over two snapshots of the counters (`Counters`), so they
are tested without a clock. `HealthMonitor` keeps the last snapshot per camera and says when a camera's
drop rate has stayed above the bound for `drop_intervals` intervals in a row, and when it came back under.
The daemon's task (`facewatchd/app/health.py`) logs the figures every `interval_s`, and hands them to the
plugins (`camera_health`, `frame_drops` hooks).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

from pydantic import Field

from facewatchd.config import Strict


class HealthConfig(Strict):
    interval_s: float = Field(60.0, gt=0, description="seconds between two health lines (and camera_health hooks)")
    max_drop_rate: float = Field(0.2, ge=0, lt=1, description="share of a camera's frames dropped over one interval "
                                 "above which the interval counts as dropping")
    drop_intervals: int = Field(2, ge=1, description="intervals in a row above max_drop_rate that make a warning "
                                "and a frame_drops alert; one interval back under it ends them")


@dataclass(frozen=True)
class StageTotals:
    calls: int = 0
    seconds: float = 0.0


class StageClock:
    """Time spent in one stage (detection, embedding), per camera. Added to from the worker threads the stage
    runs on, read from the loop: a lock keeps each (calls, seconds) pair whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, StageTotals] = {}

    @contextmanager
    def timing(self, camera: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(camera, time.perf_counter() - started)

    def add(self, camera: str, seconds: float) -> None:
        with self._lock:
            was = self._totals.get(camera, StageTotals())
            self._totals[camera] = StageTotals(was.calls + 1, was.seconds + seconds)

    def totals(self, camera: str) -> StageTotals:
        with self._lock:
            return self._totals.get(camera, StageTotals())


@dataclass(frozen=True)
class Counters:
    """One camera's running totals at one moment."""

    at: float  # monotonic seconds
    frames: int  # read from the source (CameraStats.frames)
    dropped: int  # of those, replaced by a newer one before the pipeline took them (latest frame wins)
    detect: StageTotals = field(default_factory=StageTotals)
    embed: StageTotals = field(default_factory=StageTotals)


@dataclass(frozen=True)
class CameraHealth:
    camera: str
    interval_s: float
    fps_in: float  # frames read from the source per second
    fps_out: float  # frames the pipeline took per second
    dropped: int  # in this interval
    drop_rate: float  # dropped / read, in this interval (0 when nothing was read)
    frames_total: int  # since the start
    dropped_total: int
    detect_ms: float | None  # mean time of one detection in this interval; None: no detection ran
    embed_ms: float | None  # mean time of one embedding call (a batch of faces) in this interval
    link: str  # the link's kind (local, mqtt, awsiot, greengrass)
    link_online: bool
    outbox: int  # requests waiting for the resolver's answer
    dropping: bool = False  # above max_drop_rate for drop_intervals intervals in a row

    def fields(self) -> dict[str, object]:
        """The log line's fields."""
        return {"camera": self.camera, "fps_in": self.fps_in, "fps_out": self.fps_out, "dropped": self.dropped,
                "drop_rate": self.drop_rate, "detect_ms": self.detect_ms, "embed_ms": self.embed_ms,
                "link": self.link, "link_online": self.link_online, "outbox": self.outbox}


def _mean_ms(before: StageTotals, now: StageTotals) -> float | None:
    calls = now.calls - before.calls
    return round((now.seconds - before.seconds) / calls * 1000, 2) if calls > 0 else None


def figures(camera: str, before: Counters, now: Counters, link: str, link_online: bool, outbox: int) -> CameraHealth:
    """The figures over the interval from `before` to `now`."""
    seconds = max(now.at - before.at, 1e-9)
    read = now.frames - before.frames
    dropped = now.dropped - before.dropped
    return CameraHealth(
        camera=camera, interval_s=round(seconds, 3), fps_in=round(read / seconds, 2),
        fps_out=round((read - dropped) / seconds, 2), dropped=dropped,
        drop_rate=round(dropped / read, 4) if read > 0 else 0.0, frames_total=now.frames,
        dropped_total=now.dropped, detect_ms=_mean_ms(before.detect, now.detect),
        embed_ms=_mean_ms(before.embed, now.embed), link=link, link_online=link_online, outbox=outbox)


@dataclass(frozen=True)
class DropChange:
    """A camera started dropping (sustained), or stopped."""

    camera: str
    dropping: bool
    drop_rate: float
    bound: float
    intervals: int  # in a row above the bound (when it started), or before it ended


class HealthMonitor:
    """The previous counters per camera, and each camera's run of intervals above the drop bound."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._last: dict[str, Counters] = {}
        self._above: dict[str, int] = {}  # camera → intervals in a row above the bound
        self._dropping: set[str] = set()

    def start(self, camera: str, counters: Counters) -> None:
        self._last[camera] = counters

    def report(self, camera: str, now: Counters, link: str, link_online: bool,
               outbox: int) -> tuple[CameraHealth, DropChange | None]:
        before = self._last.get(camera, Counters(now.at, 0, 0))
        self._last[camera] = now
        health = figures(camera, before, now, link, link_online, outbox)
        bound = self.config.max_drop_rate
        above = self._above[camera] = self._above.get(camera, 0) + 1 if health.drop_rate > bound else 0
        change = None
        if above >= self.config.drop_intervals and camera not in self._dropping:
            self._dropping.add(camera)
            change = DropChange(camera, True, health.drop_rate, bound, above)
        elif above == 0 and camera in self._dropping:
            self._dropping.discard(camera)
            change = DropChange(camera, False, health.drop_rate, bound, 0)
        return replace(health, dropping=camera in self._dropping), change
