"""A watch on the event loop from a thread of its own: every hook, timer and frame runs on that loop, so one
plugin that blocks it (a `time.sleep` in an `async def` hook) stalls them all. When the loop has not run
for `bound_s`, the watchdog logs it once, naming the plugin whose code the loop is stuck in (read from the
loop thread's stack), and logs again when it runs again. It only tells; the door relocks on its own
thread (plugins/door), so no plugin can hold a door open this way.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Callable

import structlog

log = structlog.get_logger("facewatchd.watchdog")

CHECK_EVERY_S = 0.25


class LoopWatchdog:
    """`with LoopWatchdog(loop, plugin_of):` from the loop's own thread; `plugin_of(filename)` names the
    plugin a source file belongs to, or None."""

    def __init__(self, loop: asyncio.AbstractEventLoop, plugin_of: Callable[[str], str | None],
                 bound_s: float = 1.0) -> None:
        self.loop = loop
        self.plugin_of = plugin_of
        self.bound_s = bound_s
        self.blocked: list[tuple[str | None, float]] = []  # (plugin, seconds) of each stall seen, latest last
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)

    def __enter__(self) -> "LoopWatchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()

    def _watch(self) -> None:
        stalled_since: float | None = None
        culprit: str | None = None
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.loop.call_soon_threadsafe(self._heartbeat)
            except RuntimeError:  # the loop is closed
                return
            late = time.monotonic() - self._beat
            if late > self.bound_s:
                if stalled_since is None:
                    stalled_since, culprit = self._beat, self._stuck_in()
                    log.error("event_loop_blocked", plugin=culprit, blocked_s=round(late, 1),
                              hint="an async hook must not block: use asyncio.to_thread for blocking work")
                    self.blocked.append((culprit, round(late, 1)))
                else:
                    self.blocked[-1] = (culprit, round(late, 1))
            elif stalled_since is not None:
                self.blocked[-1] = (culprit, round(self._beat - stalled_since, 1))
                log.warning("event_loop_running_again", plugin=culprit, blocked_s=self.blocked[-1][1])
                stalled_since = culprit = None

    def _stuck_in(self) -> str | None:
        """The innermost plugin on the loop thread's stack right now."""
        frame = sys._current_frames().get(self._loop_thread)
        while frame is not None:
            name = self.plugin_of(frame.f_code.co_filename)
            if name is not None:
                return name
            frame = frame.f_back
        return None
