"""A camera that never comes up fails the run (exit 69), and the log says which camera and why: a file or
folder that cannot be read ends without a frame, and a live source (a device, a URL) with no frame within its
`start_timeout_s` is reported. While no camera gives frames there is nothing to lose, so the run stops at once
(and systemd restarts it); otherwise the other cameras go on and the run fails when it ends. A live source is
reopened with backoff for as long as the daemon runs (`camera_reopen`, `camera_lost` in the log).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable

from facewatchd.pipeline.camera import Camera

POLL_S = 0.25  # the capture threads count frames; nothing to wait on but the counts


@dataclass(frozen=True)
class NeverUp:
    camera: str
    reason: str


async def cameras_never_up(cameras: Iterable[tuple[Camera, asyncio.Task[Any]]],
                           clock: Callable[[], float] = time.monotonic) -> AsyncIterator[NeverUp]:
    """Each camera that does not come up, as soon as that is known; ends once every camera has either given a
    frame or been reported. A camera with `start_timeout_s = 0` is waited for for ever."""
    started = clock()
    waiting = list(cameras)
    while waiting:
        still_waiting = []
        for camera, task in waiting:
            bound = camera.config.start_timeout_s
            if camera.stats.frames:
                continue
            if task.done():
                yield NeverUp(camera.config.id, "ended without a frame (see camera_unavailable)")
            elif bound and clock() - started >= bound:
                yield NeverUp(camera.config.id, f"no frame within start_timeout_s ({bound:g} s)")
            else:
                still_waiting.append((camera, task))
        waiting = still_waiting
        if waiting:
            await asyncio.sleep(POLL_S)
