"""Door access control: unlock for allowlisted people, relock after `unlock_s`, audit every decision.

A face opens the door only when all of these hold: it is named (never a pending or unknown face), the
name is on `allow`, the time is inside a `schedule` window (when there is one), at least
`min_agreeing_embeddings` of the track's own embeddings from the last `evidence_window_s` seconds each
reached `unlock_threshold` against the person (fresh, independent evidence: frames merely followed by
the tracker count for nothing, and each embedding counts only as far as the view it matched was itself
verified; see FaceEvent.evidence), the track's own recent frames show a live person, not a photo or a
screen (`[plugins.door.liveness]`, see plugins/door/liveness.py), and the person's `cooldown_s` since
their last unlock has passed. A track judged a presentation attack is never granted: the denial is
audited with the scores and the face crop, and the `presentation_attack` hook fires (alerts, Home
Assistant). Each track gets at most one unlock; a denial is written once per track and reason.

Safety: the relock runs here, in the plugin, and twice: a timer on the event loop, and a thread of its own
that locks the door if the loop has not confirmed a lock shortly after `unlock_s` (a plugin that blocks the
loop cannot hold the door open). Best of all the lock relocks by itself: `{seconds}` in the unlock command
asks it to (see backends.py), which is also what holds after a kill -9. A backend that fails or times out
while unlocking is told to lock again at once; the door is locked at start (the daemon starts plugins
before it opens any of its own state, so no state problem can keep the door from locking), when
`unlock_s` ends, and when the daemon stops. A lock that is not confirmed is never given up on: the
plugin keeps locking with backoff (`relock_backoff_max_s`) until the lock answers, and fires the
`door_status` hook (alerts, metrics) at each failure and when the door is locked again. Every decision (grant
or deny, the reason, person, similarity, camera, track) goes to the audit log, one JSON object per line.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog
from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.pipeline.demand import TrackDemand
from facewatchd.plugins import PluginContext
from facewatchd.state import append_line
from plugins.door.audit import attack_crops_dir, describe, now_iso, write_crop
from plugins.door.backends import Backend, create_backend
from plugins.door.config import DAYS, DoorConfig, Window
from plugins.door.liveness import judge
from plugins.door.memory import TrackMemory

__all__ = ["DAYS", "DoorConfig", "Plugin", "TrackMemory", "Window", "attack_crops_dir", "describe"]

log = structlog.get_logger("facewatchd.plugins.door")

RELOCK_FIRST_RETRY_S = 0.5
RELOCK_GRACE_S = 0.5  # after unlock_s, how long the loop's relock may be late before the thread's acts


class Plugin:
    def __init__(self) -> None:
        self.config: DoorConfig | None = None
        self.backend: Backend | None = None
        self.audit_path = Path("door-audit.jsonl")
        self._tracks: dict[tuple[str, str], TrackMemory] = {}
        self._last_unlock: dict[str, float] = {}  # person → monotonic time of their last unlock
        self._attacked: dict[tuple[str, str], float] = {}  # (camera, person) → monotonic end of its block
        self._backend_lock = asyncio.Lock()  # one backend action at a time: an unlock never overtakes a lock
        self._audit_lock = asyncio.Lock()  # audit lines in decision order
        self._relock_timer: asyncio.TimerHandle | None = None
        self._relock_threads: list[threading.Timer] = []  # the relock that does not need the loop
        self._unlocks = self._locks = 0  # confirmed unlocks and locks, for the relock thread to compare
        self._actions: set[asyncio.Task[None]] = set()  # unlocks and relocks: cancelled at stop, then we lock
        self._writes: set[asyncio.Task[None]] = set()  # audit lines: always finished
        self._keeper: asyncio.Task[None] | None = None  # keeps locking a door not confirmed locked
        self.locked: bool | None = None  # confirmed by the backend; None before the first answer
        self.lock_failures = 0  # consecutive failed attempts to lock
        self._name = "door"
        self._fire: Callable[..., None] = lambda hook, **kwargs: None

    # -- hooks ----------------------------------------------------------------------------------
    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[DoorConfig]]:
        return "door", DoorConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = config = context.plugin_config("door")
        self._name, self._fire = context.config.device.thing, context.host.fire
        self.audit_path = config.audit_log or context.config.device.state_dir / "door-audit.jsonl"
        await asyncio.to_thread(self.audit_path.parent.mkdir, parents=True, exist_ok=True)
        if config.unlock_threshold < context.config.identity.name_threshold:
            log.warning("door_threshold_below_recognition", unlock_threshold=config.unlock_threshold,
                        name_threshold=context.config.identity.name_threshold)
        self.backend = create_backend(config.backend, context)
        try:
            async with asyncio.timeout(config.backend.timeout_s):
                await self.backend.open()
        except Exception as e:  # the door stays locked; each unlock tries the backend again
            log.error("door_backend_unavailable", backend=config.backend.type, error=describe(e))
        await self._lock_door("start")  # whatever a crashed run left behind: locked (or kept trying)
        log.info("door_ready", backend=config.backend.type, allow=len(config.allow), audit_log=str(self.audit_path))

    @hookimpl
    async def facewatchd_stop(self, context: PluginContext) -> None:
        if self._relock_timer is not None:
            self._relock_timer.cancel()
        for timer in self._relock_threads:
            timer.cancel()  # the stop locks below
        await self._stop_keeper()
        if self._actions:  # an unlock in flight gets its timeout to finish or fail, then is abandoned
            assert self.config is not None
            _, late = await asyncio.wait(set(self._actions), timeout=self.config.backend.timeout_s + 0.5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        async with self._backend_lock:  # a last try; a lock that fails now is reported, not retried
            if not await self._lock_once("stopping"):
                await self._lock_once("stopping")
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=1)
        if self.backend is not None:
            try:
                async with asyncio.timeout(1):
                    await self.backend.close()
            except Exception as e:
                log.warning("door_backend_close_failed", error=describe(e))

    @hookimpl
    def evidence_demand(self) -> TrackDemand | None:
        """The allowlisted names on this door's cameras: fresh embeddings on a beat, and (liveness_demand)
        the only tracks whose frames are checked."""
        config = self.config
        if config is None or not config.allow:
            return None
        return TrackDemand(frozenset(config.cameras) or None, frozenset(n.casefold() for n in config.allow))

    @hookimpl
    def liveness_demand(self) -> TrackDemand | None:
        return self.evidence_demand() if self.config is not None and self.config.liveness.enabled else None

    @hookimpl
    async def face_recognised(self, event: FaceEvent) -> None:
        self._consider(event)

    @hookimpl
    async def liveness_checked(self, event: FaceEvent) -> None:
        """A frame's liveness evidence: decides a track that waits for it (a failed unlock waits for the
        next identity evidence instead, so a dead relay is not asked once a frame)."""
        memory = self._tracks.get((event.camera, event.track_id))
        if memory is not None and memory.waiting is not None:
            self._consider(event)

    @hookimpl
    async def unknown_face(self, event: FaceEvent) -> None:
        self._consider(event)

    @hookimpl
    async def track_ended(self, event: TrackEnded) -> None:
        memory = self._tracks.pop((event.face.camera, event.face.track_id), None)
        if self.config is not None and memory is not None and memory.waiting is not None and not memory.granted:
            config, last = self.config, memory.waiting
            agreeing = self._agreeing(config, last)
            if agreeing < config.min_agreeing_embeddings:
                reason, detail = "too few agreeing embeddings", \
                    f"{agreeing} of {config.min_agreeing_embeddings} recent embeddings agreed"
            else:
                reason, detail = "liveness not shown", judge(config.liveness, last, memory.liveness)[1]
            record = self._record(last, "deny", reason, detail)
            self._spawn(self._writes, lambda: self._audit(record))

    # -- decisions ------------------------------------------------------------------------------
    def _consider(self, event: FaceEvent) -> None:
        """Decide at once, on the loop (no await before the decision, so events are taken in order)."""
        config = self.config
        if config is None or (config.cameras and event.camera not in config.cameras):
            return
        if event.gone:
            return  # the face has left (a late answer): nobody to let in, nothing to remember
        memory = self._tracks.setdefault((event.camera, event.track_id), TrackMemory())
        if memory.granted or memory.attack:
            return  # this visit already opened the door, or was a photo or a screen: nothing more to decide
        verdict = self._verdict(config, event, memory)
        if verdict is None:
            return
        reason, detail = verdict
        if reason == "allowlisted":
            memory.granted, memory.waiting = True, None
            self._last_unlock[self._person_key(event)] = time.monotonic()
            record = self._record(event, "grant", reason, detail)
            self._spawn(self._actions, lambda: self._unlock(record, memory, event))
        elif reason == "presentation attack":
            memory.attack, memory.waiting = True, None
            self._attacked[(event.camera, self._person_key(event))] = time.monotonic() + config.liveness.block_s
            record = self._record(event, "deny", reason, detail)
            self._spawn(self._writes, lambda: self._audit_attack(record, event))
            self._fire("presentation_attack", event=event, detail=detail)
        elif reason != memory.last_reason:
            memory.last_reason = reason
            memory.waiting = None
            record = self._record(event, "deny", reason, detail)
            self._spawn(self._writes, lambda: self._audit(record))

    def _verdict(self, config: DoorConfig, event: FaceEvent, memory: TrackMemory) -> tuple[str, str] | None:
        """(reason, detail), or None while the track may still earn an unlock with more frames."""
        if not event.name:
            return "unknown face", "no name for this face"
        if event.name.casefold() not in {n.casefold() for n in config.allow}:
            return "not on allowlist", f"{event.name!r} may not unlock"
        if config.schedule and not any(w.contains(datetime.now()) for w in config.schedule):
            return "outside schedule", datetime.now().strftime("%a %H:%M")
        live, live_detail = "live", ""
        if config.liveness.enabled:
            live, live_detail = judge(config.liveness, event, memory.liveness)
            if live == "attack":
                return "presentation attack", live_detail
            blocked_until = self._attacked.get((event.camera, self._person_key(event)), 0.0)
            if time.monotonic() < blocked_until:  # a retry after an attack is a new track: it waits its turn
                return "blocked after an attack", f"{blocked_until - time.monotonic():.0f}s left"
        agreeing = self._agreeing(config, event)
        if agreeing < config.min_agreeing_embeddings:
            memory.waiting = event
            if event.similarity < config.unlock_threshold:  # the latest evidence itself is too weak
                return "below unlock threshold", f"similarity {event.similarity:.3f} < {config.unlock_threshold}"
            return None
        if live == "wait":  # who it is holds; that it is a live person does not yet
            memory.waiting = event
            return None
        last = self._last_unlock.get(self._person_key(event))
        if last is not None and time.monotonic() - last < config.cooldown_s:
            return "cooldown", f"unlocked for this person {time.monotonic() - last:.1f}s ago"
        return "allowlisted", f"{agreeing} recent embeddings agreed, similarity {event.similarity:.3f}"

    @staticmethod
    def _agreeing(config: DoorConfig, event: FaceEvent) -> int:
        """The track's own embeddings from the last evidence_window_s that reached unlock_threshold."""
        since = event.ts - config.evidence_window_s
        return sum(1 for ts, similarity in event.evidence if ts >= since and similarity >= config.unlock_threshold)

    @staticmethod
    def _person_key(event: FaceEvent) -> str:
        return event.person_id or (event.name or "").casefold()

    # -- the lock -------------------------------------------------------------------------------
    async def _unlock(self, record: dict[str, Any], memory: TrackMemory, event: FaceEvent) -> None:
        assert self.config is not None and self.backend is not None
        async with self._backend_lock:
            await self._stop_keeper()  # an intended unlock; the relock after it keeps trying on its own
            self._arm_relock_thread()  # before the command: a loop blocked from here on cannot keep it open
            try:
                async with asyncio.timeout(self.config.backend.timeout_s):
                    await self.backend.unlock(self.config.unlock_s)
            except asyncio.CancelledError:  # the daemon is stopping; facewatchd_stop locks next
                await self._audit({**record, "decision": "deny", "reason": "stopping",
                                   "detail": "unlock abandoned at stop"})
                raise
            except Exception as e:  # it may have half-worked (a timeout): lock again before anything else
                memory.granted = False  # a later frame of this visit may try again
                self._last_unlock.pop(self._person_key(event), None)
                self.locked = False
                await self._audit({**record, "decision": "deny", "reason": "backend failed", "detail": describe(e)})
                if not await self._lock_once("unlock failed"):
                    self._keep_locking("unlock failed")
                return
            self.locked = False
            await self._audit(record)
            if self._relock_timer is not None:
                self._relock_timer.cancel()
            self._relock_timer = asyncio.get_running_loop().call_later(
                self.config.unlock_s, self._spawn, self._actions, lambda: self._lock_door("unlock_s elapsed"))
            log.info("door_unlocked", name=record["name"], camera=record["camera"], relock_in_s=self.config.unlock_s)

    def _arm_relock_thread(self) -> None:
        """A second relock that no plugin can hold up: a thread of its own locks the door if the loop has not
        confirmed a lock `RELOCK_GRACE_S` after unlock_s (a plugin blocking the loop, a loop gone wrong),
        counted from when the unlock command is sent, whether or not its answer arrives."""
        assert self.config is not None
        self._unlocks += 1
        unlock, locked_before = self._unlocks, self._locks

        def relock() -> None:
            if self._unlocks != unlock or self._locks != locked_before or self.backend is None:
                return  # locked meanwhile by the loop, or unlocked again (that unlock armed its own)
            try:
                done = self.backend.lock_blocking()
            except Exception as e:
                log.error("door_thread_relock_failed", error=describe(e))
                return
            if done:
                log.warning("door_relocked_from_thread", why="the event loop did not lock in time",
                            late_s=RELOCK_GRACE_S)

        timer = threading.Timer(self.config.unlock_s + RELOCK_GRACE_S, relock)
        timer.daemon = True
        timer.start()
        self._relock_threads = [t for t in self._relock_threads if t.is_alive()] + [timer]

    async def _lock_door(self, why: str) -> None:
        async with self._backend_lock:
            if not await self._lock_once(why):
                self._keep_locking(why)

    async def _lock_once(self, why: str) -> bool:
        """One attempt to lock; True when the backend confirmed it. Call with the backend lock held."""
        assert self.config is not None and self.backend is not None
        try:
            async with asyncio.timeout(self.config.backend.timeout_s):
                await self.backend.lock()
        except Exception as e:
            self.locked = False
            self.lock_failures += 1
            error = describe(e)
            log.error("door_lock_failed", why=why, failures=self.lock_failures, error=error)
            if self.lock_failures == 1:  # the audit says when it began and when it ended, not every retry
                await self._audit({"ts": now_iso(), "decision": "lock failed", "reason": why, "detail": error})
            self._fire("door_status", door=self._name, locked=False, failures=self.lock_failures, detail=error)
            return False
        if self.lock_failures:
            log.warning("door_locked_again", why=why, after_failures=self.lock_failures)
            await self._audit({"ts": now_iso(), "decision": "locked", "reason": why,
                               "detail": f"after {self.lock_failures} failed attempt(s)"})
            self._fire("door_status", door=self._name, locked=True, failures=self.lock_failures, detail="locked")
        else:
            log.info("door_locked", why=why)
        self.locked, self.lock_failures = True, 0
        self._locks += 1
        return True

    def _keep_locking(self, why: str) -> None:
        """Lock until the backend confirms it, with backoff; never gives up while the daemon runs."""
        if self._keeper is not None and not self._keeper.done():
            return

        async def keep() -> None:
            assert self.config is not None
            delay = RELOCK_FIRST_RETRY_S
            while True:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                async with self._backend_lock:
                    if self.locked or await self._lock_once(why):
                        return
                delay = min(delay * 2, self.config.relock_backoff_max_s)

        self._keeper = asyncio.get_running_loop().create_task(keep(), name="door-keep-locking")

    async def _stop_keeper(self) -> None:
        if self._keeper is not None and not self._keeper.done():
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)

    # -- audit ----------------------------------------------------------------------------------
    @staticmethod
    def _record(event: FaceEvent, decision: str, reason: str, detail: str) -> dict[str, Any]:
        return {"ts": now_iso(), "decision": decision, "reason": reason, "detail": detail,
                "person_id": event.person_id, "name": event.name, "similarity": round(event.similarity, 4),
                "agreed_frames": event.agreed_frames, "evidence": [round(sim, 4) for _, sim in event.evidence[-4:]],
                "liveness": [round(sample.score, 3) for sample in event.liveness[-4:]],
                "parallax": round(max((sample.parallax or 0.0 for sample in event.liveness), default=0.0), 3),
                "framed": sum(sample.framed for sample in event.liveness),
                "camera": event.camera, "track_id": event.track_id, "camera_ts": round(event.ts, 3)}

    async def _audit_attack(self, record: dict[str, Any], event: FaceEvent) -> None:
        """An attack's record keeps the face crop beside the log (`crop`: a file in `door-attacks/`), so the
        review page can show what was held up to the camera."""
        if event.crop_jpeg:
            name = f"{uuid.uuid4().hex}.jpg"
            try:
                await asyncio.to_thread(write_crop, attack_crops_dir(self.audit_path) / name, event.crop_jpeg)
                record = {**record, "crop": name}
            except OSError as e:
                log.error("door_attack_crop_write_failed", error=str(e))
        await self._audit(record)

    async def _audit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        log.info("door_decision", **record)
        async with self._audit_lock:
            try:
                await asyncio.to_thread(append_line, self.audit_path, line)
            except OSError as e:
                log.error("door_audit_write_failed", path=str(self.audit_path), error=str(e), record=record)

    def _spawn(self, tasks: set[asyncio.Task[None]], make: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await make()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("door_task_failed")

        task = asyncio.get_running_loop().create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
