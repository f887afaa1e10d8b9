"""Retention: what facewatchd keeps about people, and for how long.

Every `interval_s` (and once the embedded resolver is up) it deletes face crops older than `crops_days`,
door audit entries older than `audit_days`, analytics rows older than `analytics_days`, and forgets every
unnamed person not seen for `unnamed_person_days` everywhere: collection, crops, records, and through the
shadow every device's cache (which fires `person_labelled(name=None)`, so Home Assistant drops them).
"Seen" is the resolver's last face of theirs or, since the device's cache names a returning person
without asking the resolver, the last `unknown_face` of theirs here.
A named person is never forgotten here. Which persons expire is the resolver core's rule
(`resolver.core.unseen_unnamed`); on AWS the scheduled `deploy/lambda/cleanup.py` applies the same rule.
A value of 0 days keeps that kind of data for ever.

All the work is off the event loop (files and SQLite in worker threads); times come from `clock`, so a
test moves it forward instead of waiting days.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Callable

import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.events import FaceEvent
from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginContext
from facewatchd.resolver.core import DAY_S, Resolver
from facewatchd.resolver.local import DirectoryCropStore
from facewatchd.state import ChangeLog, prune_lines
from facewatchd.web import door_audit_path
from plugins.analytics import AnalyticsConfig, db_path
from plugins.analytics.store import prune as prune_analytics

log = structlog.get_logger("facewatchd.plugins.retention")

# The analytics plugin's database in the state dir: one row per hour, `hour_start` in epoch seconds.
STOP_WAIT_S = 5.0


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crops_days: float = Field(30.0, ge=0, description="face crops are deleted this long after they were stored "
                              "(their records stay); 0: kept for ever")
    audit_days: float = Field(90.0, ge=0, description="door audit entries older than this are deleted; 0: kept")
    analytics_days: float = Field(365.0, ge=0, description="analytics rows older than this are deleted; 0: kept")
    unnamed_person_days: float = Field(30.0, ge=0, description="an unnamed person not seen this long is forgotten "
                                       "everywhere; named persons never are; 0: kept")
    interval_s: float = Field(3600.0, ge=1, le=7 * DAY_S, description="time between two sweeps")


@dataclass
class Sweep:
    """What one sweep deleted."""

    crops: int = 0
    audit_entries: int = 0
    analytics_rows: int = 0
    persons: list[str] = field(default_factory=list)


def audit_entry_before(line: str, before: float) -> bool:
    """A door audit line (JSON with an ISO `ts`) written before `before`. A line that cannot be dated is
    never taken for old."""
    try:
        ts = datetime.fromisoformat(json.loads(line)["ts"])
    except (ValueError, KeyError, TypeError):
        return False
    return ts.tzinfo is not None and ts.timestamp() < before


class Plugin:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.config = RetentionConfig()
        self.resolver: Resolver | None = None
        self.audit_path: Path | None = None
        self.analytics_db: Path | None = None
        self.changes: ChangeLog | None = None
        self.sweeps: list[Sweep] = []  # the latest first: what each sweep deleted
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[RetentionConfig]]:
        return "retention", RetentionConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = context.plugin_config("retention")
        state_dir = context.config.device.state_dir
        self.audit_path = door_audit_path(context.config)
        analytics = context.plugin_config("analytics")
        self.analytics_db = db_path(context.config, analytics if analytics is not None else AnalyticsConfig())
        self.changes = ChangeLog(state_dir)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    @hookimpl
    async def resolver_started(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._kick.set()  # sweep the persons now, not an interval later

    @hookimpl
    async def unknown_face(self, event: FaceEvent) -> None:
        # The device's cache names a returning unnamed person without asking the resolver, which would
        # otherwise think them gone. (Named persons never expire: nothing to note for them.)
        if self.resolver is not None and event.person_id:
            await self.resolver.seen(event.person_id, self.clock())

    @hookimpl
    async def facewatchd_stop(self, context: PluginContext) -> None:
        if self._task is None:
            return
        # A sweep in progress may finish its step (a forget half done is redone next time); then it ends.
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=STOP_WAIT_S)

    @contextlib.asynccontextmanager
    async def _step(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except Exception as e:
            log.exception("retention_step_failed", step=what, error=repr(e))

    async def _run(self) -> None:
        while True:
            self._kick.clear()
            try:
                await self.sweep()
            except Exception as e:  # never ends the loop: the next sweep tries again
                log.exception("retention_sweep_failed", error=repr(e))
            try:
                async with asyncio.timeout(self.config.interval_s):
                    await self._kick.wait()
            except TimeoutError:
                pass

    async def sweep(self) -> Sweep:
        """Delete everything older than its configured days, at the clock's time now. Each kind is its own
        step: one that fails (a locked database, a damaged log) is logged and the others still run."""
        now, cfg, done = self.clock(), self.config, Sweep()
        crops = self.resolver.crops if self.resolver is not None else None
        if cfg.crops_days and isinstance(crops, DirectoryCropStore):
            async with self._step("crops"):
                done.crops = await crops.delete_older(now - cfg.crops_days * DAY_S)
        if cfg.audit_days and self.audit_path is not None:
            before = now - cfg.audit_days * DAY_S
            async with self._step("door audit"):
                done.audit_entries = await asyncio.to_thread(
                    prune_lines, self.audit_path, lambda line: not audit_entry_before(line, before))
        if cfg.analytics_days and self.analytics_db is not None:
            async with self._step("analytics"):
                done.analytics_rows = await asyncio.to_thread(prune_analytics, self.analytics_db,
                                                              now - cfg.analytics_days * DAY_S)
        if cfg.unnamed_person_days and self.resolver is not None:
            async with self._step("persons"):
                for person in await self.resolver.forget_unseen(cfg.unnamed_person_days, now):
                    done.persons.append(person.person_id)
                    if self.changes is not None:
                        await self.changes.record("retention", "forget", person_id=person.person_id,
                                                  reason=f"unnamed, not seen for {cfg.unnamed_person_days:g} days")
        self.sweeps.insert(0, done)
        del self.sweeps[10:]
        log.info("retention_sweep", crops=done.crops, audit_entries=done.audit_entries,
                 analytics_rows=done.analytics_rows, persons=len(done.persons))
        return done
