"""The device's health line: every `[health] interval_s`, per camera, the figures of
`facewatchd.pipeline.health` at info level, and to the plugins (`camera_health`); a drop rate above the
bound for `drop_intervals` intervals in a row is a warning and a `frame_drops` hook (the alerts plugin's
alert), and so is its end."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import structlog

from facewatchd.pipeline.health import Counters, HealthConfig, HealthMonitor

log = structlog.get_logger("facewatchd.health")

LinkState = tuple[str, bool, int]  # the link's kind, whether it is online, the outbox's depth


async def report_health(config: HealthConfig, counters: Callable[[], dict[str, Counters]],
                        link_state: Callable[[], LinkState], fire: Callable[..., Any]) -> None:
    """Runs until cancelled. `counters` snapshots every camera's running totals; `fire` fires a hook."""
    monitor = HealthMonitor(config)
    for camera, start in counters().items():
        monitor.start(camera, start)
    while True:
        await asyncio.sleep(config.interval_s)
        link, online, outbox = link_state()
        for camera, now in counters().items():
            health, change = monitor.report(camera, now, link, online, outbox)
            log.info("health", **health.fields())
            fire("camera_health", health=health)
            if change is None:
                continue
            if change.dropping:
                log.warning("frames_dropping", camera=camera, drop_rate=change.drop_rate, bound=change.bound,
                            intervals=change.intervals, interval_s=config.interval_s)
            else:
                log.info("frames_dropping_ended", camera=camera, drop_rate=change.drop_rate, bound=change.bound)
            fire("frame_drops", camera=camera, dropping=change.dropping, drop_rate=change.drop_rate,
                 bound=change.bound)
