"""The daemon: wires cameras → detector → tracker → recognizer (cache) → uplink, the link and the
plugins, and owns their lifecycle (start, signals, graceful drain, summary).

Per camera two stages run as tasks joined by a bounded queue: detection (in the thread pool) and
tracking + recognition. Shared by all cameras: the embedder, the face cache, the uplink and the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import structlog

from facewatchd.aio import cancel_and_wait
from facewatchd.app.camera_start import NeverUp, cameras_never_up
from facewatchd.app.config import Config
from facewatchd.app.health import LinkState, report_health
from facewatchd.app.summary import Summary, summarise
from facewatchd.app.wiring import notify_systemd, serve_resolver, stop_on_signals
from facewatchd.link.base import Link, LinkDown
from facewatchd.outbox import Outbox
from facewatchd.pipeline.cache import FaceCache
from facewatchd.pipeline.health import Counters, StageClock
from facewatchd.pipeline.labels import apply_delta
from facewatchd.pipeline.motion import MotionGate, shrink
from facewatchd.pipeline.regions import Box, RegionPlanner
from facewatchd.pipeline.camera import Camera, Frame
from facewatchd.pipeline.liveness import LivenessWatch
from facewatchd.pipeline.recognizer import Recognizer
from facewatchd.pipeline.tracker import SceneCutDetector, Tracker
from facewatchd.pipeline.uplink import Uplink
from facewatchd.plugins import PluginHost
from facewatchd.state import StateDirLock
from facewatchd.web import Live, WebServer, door_audit_path
from facewatchd.vision.detector import Face, YuNetDetector
from facewatchd.vision.embedder import create_embedder
from facewatchd.watchdog import LoopWatchdog

log = structlog.get_logger("facewatchd.daemon")

STAGE_QUEUE_SIZE = 4  # detected frames waiting for the tracker, per camera
EVICT_EVERY_S = 60.0



def embedding_threads(config: Config, cameras: int) -> int:
    """[device] embed_threads, or 1 for one camera (the memory of one network) and 2 for more on two cores:
    several cameras' new faces come in bursts that one SFace thread queues until frames drop."""
    if config.embedder.type == "torch":
        return 1  # one model, used one face at a time
    if config.device.embed_threads:
        return config.device.embed_threads
    return 1 if cameras <= 1 else max(1, min(2, os.cpu_count() or 1))

class Daemon:
    def __init__(self, config: Config, plugins: PluginHost | None = None, link: Link | None = None) -> None:
        self.config = config
        self.plugins = plugins or PluginHost(config)
        self._link = link
        self.stop_event = asyncio.Event()
        self._stop_requested = False  # by a signal (or a caller), not by the run itself
        self.cameras = [Camera(c) for c in config.cameras]
        self.detect_clock = StageClock()  # the detectors' time per camera, for the health line
        self.recognizer: Recognizer | None = None
        self._planners: dict[str, RegionPlanner] = {}  # per camera: where its frames were detected
        self.liveness: LivenessWatch | None = None
        self.watchdog: LoopWatchdog | None = None
        self.uplink: Uplink | None = None
        self.link: Link | None = None
        self._embedded: Any = None
        self._online_at_end = False
        self._background: list[asyncio.Task[Any]] = []
        self.cameras_never_up: list[NeverUp] = []  # set: the run failed, a camera gave no frame
        self.web: WebServer | None = None
        self.live: Live | None = None
        if config.web.enabled:  # the review page's "now": fed by the same hooks as every plugin
            self.live = Live()
            self.plugins.register("web-now", self.live, "builtin")
        self.plugins.health = self.problem  # /healthz (metrics plugin) asks the daemon itself
        cv2.setNumThreads(1)  # parallelism comes from the thread pool, not OpenCV's own threads

    def _build_link(self) -> Link:
        if self._link is not None:
            return self._link
        kind = self.config.link.type
        if kind == "local":
            from facewatchd.resolver.embedded import EmbeddedResolver

            self._embedded = EmbeddedResolver(self.config.device.state_dir, self.config.resolver, self.config.detector,
                                              self.config.embedder, self.config.identity)
            return self._embedded.link(self.config.device.thing)
        from facewatchd.link import create_link

        return create_link(self.config.device.thing, self.config.link, self.config.device.state_dir,
                           lambda: self.plugins.mqtt)

    def request_stop(self) -> None:
        self._stop_requested = True
        self.stop_event.set()

    def problem(self) -> str | None:
        """What is broken, or None while every background task (uplink, deltas, housekeeping) runs. A
        task that died leaves the daemon half-alive: the watchdog and /healthz report it."""
        if self.stop_event.is_set():
            return None
        dead = [t.get_name() for t in self._background if t.done()]
        return f"background task(s) ended: {', '.join(dead)}" if dead else None

    def status(self) -> str:
        """systemd's one-line STATUS."""
        rec, uplink, link = self.recognizer, self.uplink, self.link
        return (f"cache {len(rec.cache) if rec else 0} faces, {uplink.pending if uplink else 0} pending, "
                f"link {'online' if link is not None and link.online else 'offline'}, "
                f"{sum(c.stats.frames for c in self.cameras)} frames")

    async def run(self) -> Summary:
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            # Plugins first: a door locks before anything below (the state, the models) can fail.
            await self.plugins.start()
            stack.push_async_callback(self.plugins.stop)
            stack.enter_context(StateDirLock(self.config.device.state_dir))
            # a plugin that blocks the loop is named in the log (the door relocks from its own thread anyway)
            self.watchdog = stack.enter_context(LoopWatchdog(asyncio.get_running_loop(), self.plugins.plugin_of))
            summary = await self._run(stack)
        log.info("daemon_stopped", **{k: v for k, v in summary.as_dict().items() if k != "persons"})
        summary.seconds = round(time.monotonic() - started, 2)
        return summary

    async def _run(self, stack: contextlib.AsyncExitStack) -> Summary:
        started = time.monotonic()
        cfg = self.config
        executor = ThreadPoolExecutor(max_workers=cfg.device.workers, thread_name_prefix="cv")
        stack.callback(executor.shutdown, wait=True, cancel_futures=True)
        # SFace on threads of its own, each with its own network (the embedder keeps as many as ran at once, at
        # most this many): on the detectors' pool a queued embedding would hold detection up. The embedded
        # resolver shares those networks (it waits for one at most a pass) rather than load more copies.
        embed_threads = embedding_threads(cfg, len(self.cameras))
        recognizer_executor = ThreadPoolExecutor(max_workers=embed_threads, thread_name_prefix="sface")
        stack.callback(recognizer_executor.shutdown, wait=True, cancel_futures=True)
        loop = asyncio.get_running_loop()
        # One detector for every camera: it keeps as many networks as detection threads ran at once
        embedder, detector = await loop.run_in_executor(
            executor, lambda: (create_embedder(cfg.embedder, networks=embed_threads), YuNetDetector(cfg.detector)))
        cache = FaceCache(cfg.device.state_dir / "cache.db", cfg.cache, cfg.identity)
        stack.callback(cache.close)
        outbox = Outbox(cfg.device.state_dir / "outbox.db", cfg.uplink.outbox_max_rows)
        stack.callback(outbox.close)
        for face_id in cache.pending_faces() - outbox.face_ids():
            # killed between the cache write and the outbox write: forget the orphan, the face will be seen anew
            cache.drop_face(face_id)
        outbox.make_all_due()  # a restart is a fresh start: resend what is pending now, not after old backoffs
        self.link = link = self._build_link()
        if self._embedded is not None:
            self._embedded.share_embedder(embedder)
        self.uplink = uplink = Uplink(link, outbox, cfg.uplink)
        self.recognizer = recognizer = Recognizer(cfg.device.thing, embedder, cache, uplink, cfg.uplink,
                                                  recognizer_executor, self.plugins.fire, cfg.identity, cfg.quality,
                                                  self.plugins.evidence_demands())
        # only where a decision asks for it (a door's cameras and allowlist, [liveness] cameras): else no model
        self.liveness = await loop.run_in_executor(executor, LivenessWatch.build, cfg.liveness,
                                                   self.plugins.liveness_demands(), executor, recognizer.event,
                                                   self.plugins.fire)
        stop_on_signals(self.request_stop)
        if self._embedded is not None:
            stack.callback(self._embedded.close)
            self.plugins.fire("resolver_started", resolver=self._embedded.resolver)
            self.web = await serve_resolver(stack, self._embedded.resolver, cfg.device.state_dir, cfg.web, self.live,
                                            door_audit_path(cfg))
        log.info("daemon_started", thing=cfg.device.thing, cameras=[c.config.id for c in self.cameras],
                 link=cfg.link.type, cache_entries=len(cache), outbox=len(outbox))
        self.plugins.fire("link_status", online=True, link=cfg.link.type) if cfg.link.type == "local" else None
        try:
            async with link:
                # The uplink has its own stop: it keeps sending through the drain after the cameras stop.
                uplink_stop = asyncio.Event()
                background = [loop.create_task(uplink.run(uplink_stop), name="uplink"),
                              loop.create_task(self._apply_deltas(link), name="deltas"),
                              loop.create_task(self._housekeeping(cache), name="housekeeping"),
                              loop.create_task(report_health(cfg.health, self._health_counters, self._link_state,
                                                             self.plugins.fire), name="health"),
                              loop.create_task(notify_systemd(self.status, self.problem), name="systemd")]  # READY, watchdog, STOPPING
                camera_tasks = [loop.create_task(self._camera(cam, detector, executor), name=f"camera-{cam.config.id}")
                                for cam in self.cameras]
                self._background = background
                for task in background + camera_tasks:
                    task.add_done_callback(_log_failure)
                starting = loop.create_task(self._watch_start(camera_tasks), name="camera-start")
                await self._wait_for_end(camera_tasks)
                await starting  # every camera has ended by now: it returns at its next look
                await self._drain(uplink)
                self._online_at_end = link.online
                self.stop_event.set()
                uplink_stop.set()
                for task in background:
                    await cancel_and_wait(task)
                await asyncio.gather(*camera_tasks, return_exceptions=True)
        finally:
            await self.plugins.stop()  # before the state closes: the last hooks may still read it
        return self._summary(time.monotonic() - started)

    async def _wait_for_end(self, camera_tasks: list[asyncio.Task[None]]) -> None:
        """Until a signal, or until every camera has ended when all of them are files."""
        stopper = asyncio.ensure_future(self.stop_event.wait())
        all_files = all(not c.live for c in self.cameras)
        pending: set[asyncio.Future[Any]] = {stopper, *camera_tasks}
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                break
            if all_files and pending == {stopper}:
                break
            if not self.cameras and pending == {stopper}:
                continue
        stopper.cancel()
        self.stop_event.set()  # ends cameras still running (a signal)
        await asyncio.gather(*camera_tasks, return_exceptions=True)

    async def _watch_start(self, camera_tasks: list[asyncio.Task[None]]) -> None:
        """Records each camera that never comes up (the run then fails); stops the run while none gives frames."""
        async for camera in cameras_never_up(zip(self.cameras, camera_tasks)):
            if self._stop_requested:  # stopped (a signal) before its first frame: no failure of the camera
                return
            log.error("camera_never_up", camera=camera.camera, reason=camera.reason)
            self.cameras_never_up.append(camera)
            if not any(c.stats.frames for c in self.cameras):
                self.stop_event.set()  # nothing is watched, so nothing is lost: fail now, and be restarted

    async def _drain(self, uplink: Uplink) -> None:
        """Give the resolver time to answer what is still pending, so the summary is complete. The link may
        still be connecting (a short file can end first), so this waits on the deadline, not on the link."""
        deadline = time.monotonic() + self.config.device.drain_timeout_s
        while uplink.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.plugins.drain()

    async def _camera(self, camera: Camera, detector: YuNetDetector, executor: ThreadPoolExecutor) -> None:
        tracker = Tracker(camera.config.id, self.config.tracker)
        # Where the faces are for the detection stage: the same tracker fed the same detections, so it holds
        # the tracks as of the last detected frame whatever the recognizer's pace (its Track objects are the
        # recognizer's and must match the frame it is on). The same frames then give the same detections.
        located = Tracker(camera.config.id, self.config.tracker)
        cuts = SceneCutDetector(self.config.tracker.scene_cut_threshold)
        gate = MotionGate(self.config.motion)
        planner = self._planners[camera.config.id] = RegionPlanner(self.config.regions)
        queue: asyncio.Queue[tuple[Frame, list[Face], bool] | None] = asyncio.Queue(STAGE_QUEUE_SIZE)
        loop = asyncio.get_running_loop()

        def analyse(image: Any, tracks: list[Box]) -> tuple[list[Face] | None, bool]:
            """Faces (None: not looked for, nothing moved) and whether the shot changed."""
            small = shrink(image)
            moved = gate.opens(small)  # every frame: the gate's background follows the scene
            if not (moved or tracks):
                return None, False  # the next detected frame is compared with the last one detected
            cut = cuts.is_cut(small)
            regions = planner.plan(image.shape[1], image.shape[0], tracks, gate.moved, cut)
            with self.detect_clock.timing(camera.config.id):
                faces = detector.detect_in(image, regions) if regions is not None else \
                    detector.detect_refined(image) if self.config.regions.enabled else detector.detect(image)
            return faces, cut

        async def detect() -> None:
            try:
                async for frame in camera.frames(self.stop_event):
                    try:
                        # A live track is detected in every frame, still or not: only an empty scene is gated.
                        faces, cut = await loop.run_in_executor(executor, analyse, frame.image,
                                                                [t.face.box for t in located.tracks])
                    except (cv2.error, ValueError) as e:
                        camera.stats.unreadable += 1
                        log.warning("frame_skipped", camera=camera.config.id, frame=frame.index, error=str(e))
                        continue
                    if faces is None:
                        camera.stats.gated += 1
                        continue
                    located.update(faces, frame.index, frame.ts, scene_cut=cut)
                    await queue.put((frame, faces, cut))
            finally:
                await queue.put(None)

        async def track() -> None:
            assert self.recognizer is not None
            first = True
            while (item := await queue.get()) is not None:
                frame, faces, cut = item
                if first:
                    log.info("camera_first_frame", camera=camera.config.id, frame=frame.index)
                    first = False
                update = tracker.update(faces, frame.index, frame.ts, scene_cut=cut)
                try:
                    await self.recognizer.process(frame, update)
                    if self.liveness is not None:
                        await self.liveness.observe(frame, update.started + update.continued)
                except Exception as e:  # one bad frame (a full disk, an OpenCV error) must not end the camera
                    log.exception("frame_failed", camera=camera.config.id, frame=frame.index, error=repr(e))
            for t in tracker.end_all():
                await self.recognizer.end(t)

        async with asyncio.TaskGroup() as stages:  # if one stage dies, the other is cancelled, not stranded
            stages.create_task(detect())
            stages.create_task(track())
        log.info("camera_ended", camera=camera.config.id, frames=camera.stats.frames, dropped=camera.stats.dropped)

    async def _apply_deltas(self, link: Link) -> None:
        assert self.recognizer is not None
        async for delta in link.deltas():
            try:
                clear, reported = self.apply_delta(delta)
            except Exception as e:  # a bad delta must never stop labels from being applied
                log.error("delta_failed", error=repr(e))
                continue
            if clear:
                try:
                    await link.update_shadow({"desired": clear, "reported": reported})
                except LinkDown:
                    log.warning("shadow_clear_deferred", keys=list(clear))

    def apply_delta(self, delta: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Apply labels from a shadow delta; returns the desired keys to clear and what to report."""
        assert self.recognizer is not None
        return apply_delta(self.recognizer, delta)

    async def _housekeeping(self, cache: FaceCache) -> None:
        was_online: bool | None = None
        last_evict = time.monotonic()
        cameras_seen: dict[str, tuple[int, int, bool]] = {}  # camera id → (reopens, frames, online)
        while True:
            await asyncio.sleep(0.5)
            self._camera_status(cameras_seen)
            online = bool(self.link and self.link.online)
            if online != was_online and was_online is not None:
                self.plugins.fire("link_status", online=online, link=self.config.link.type)
                log.warning("link_online" if online else "link_offline", link=self.config.link.type)
            was_online = online
            if self.recognizer is not None:
                self.recognizer.drop_unanswerable()  # given up by the uplink (expired, unsendable)
            if time.monotonic() - last_evict > EVICT_EVERY_S:
                last_evict = time.monotonic()
                if evicted := cache.evict():
                    log.info("cache_evicted", entries=evicted)

    def _camera_status(self, seen: dict[str, tuple[int, int, bool]]) -> None:
        """Fire camera_status when a live camera starts reopening without frames, or delivers again."""
        for cam in self.cameras:
            if not cam.live:
                continue
            reopens, frames = cam.stats.reopens, cam.stats.frames
            last_reopens, last_frames, online = seen.get(cam.config.id, (0, 0, True))
            if online and reopens > last_reopens and frames == last_frames:
                online = False
                self.plugins.fire("camera_status", camera=cam.config.id, online=False, reason="source lost, reopening")
            elif not online and frames > last_frames:
                online = True
                self.plugins.fire("camera_status", camera=cam.config.id, online=True, reason="frames again")
            seen[cam.config.id] = (reopens, frames, online)

    def _health_counters(self) -> dict[str, Counters]:
        embed = self.recognizer.embed_clock if self.recognizer else StageClock()
        now = time.monotonic()
        return {c.config.id: Counters(now, c.stats.frames, c.stats.dropped, self.detect_clock.totals(c.config.id),
                                      embed.totals(c.config.id)) for c in self.cameras}

    def _link_state(self) -> LinkState:
        return self.config.link.type, bool(self.link and self.link.online), self.uplink.pending if self.uplink else 0

    def _summary(self, seconds: float) -> Summary:
        return summarise(self.cameras, self._planners.values(), self.recognizer, self.uplink, self._online_at_end,
                         seconds)


def _log_failure(task: asyncio.Task[Any]) -> None:
    """A background task must never die unnoticed."""
    if not task.cancelled() and task.exception() is not None:
        log.error("task_failed", task=task.get_name(), error=repr(task.exception()))
