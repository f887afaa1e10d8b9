"""The four recognition policies bench/visits.py compares on one stream: facewatchd's own parts, and three
baselines that call a local resolver directly (every face, the seed's six-entry cache, every new track)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.visits_stream import Detection, SharedEmbeddings
from facewatchd.app.config import Config
from facewatchd.app.device import Daemon
from facewatchd.link.local import LocalLink
from facewatchd.messages import FaceQuery, Resolution, new_face_id
from facewatchd.outbox import Outbox
from facewatchd.pipeline.cache import FaceCache
from facewatchd.pipeline.camera import Frame
from facewatchd.pipeline.recognizer import Recognizer
from facewatchd.pipeline.tracker import Track, TrackUpdate
from facewatchd.pipeline.uplink import Uplink, face_crop_jpeg
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverStores

THING = "bench"
SEED_CACHE_SIZE = 6
SEED_RESEND_S = 60.0
SETTLE_TIMEOUT_S = 10.0
POLICIES = ("facewatchd", "per-frame", "seed-workshop", "per-track")

Shown = tuple[str | None, str | None]  # (person id, name) a policy shows for one face


@dataclass
class Call:
    person: int | None
    visit: int | None


class Policy:
    name = ""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.seconds = 0.0  # wall time spent in this policy, resolver included

    async def start(self, stack: AsyncExitStack) -> None:
        pass

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        raise NotImplementedError

    async def end(self, tracks: list[Track]) -> None:
        pass

    async def label(self, person_id: str, name: str) -> None:
        raise NotImplementedError


class DiscardShadow:
    """The baselines get their answer from the resolver call itself; no device listens on a shadow."""

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        return None


class ResolverPolicy(Policy):
    """A baseline that calls its own local resolver directly and waits for the answer."""

    def __init__(self, state_dir: Path, config: Config) -> None:
        super().__init__()
        # The resolver embeds each crop itself; these baselines hand it the embedding this bench already made
        # of the same face (same model), instead of running SFace a second time on every crop of every frame.
        self._embeddings: dict[bytes, np.ndarray] = {}
        self.stores = LocalResolverStores(state_dir / "resolver", self._embeddings.get)
        self.resolver = Resolver(self.stores.crops, self.stores.collection, self.stores.names, DiscardShadow(),
                                 config.identity, config.resolver.templates_per_person)
        self.uplink_config = config.uplink

    async def ask(self, frame: Frame, det: Detection, track: Track) -> Resolution:
        if det.jpeg is None:
            det.jpeg = face_crop_jpeg(frame.image, det.face, self.uplink_config)
        self.calls.append(Call(det.person, det.visit))
        self._embeddings[det.jpeg] = det.embedding
        try:
            return await self.resolver.resolve(FaceQuery(new_face_id(), THING, "bench", track.id, det.jpeg, None,
                                                         frame.ts))
        finally:
            self._embeddings.pop(det.jpeg, None)

    async def label(self, person_id: str, name: str) -> None:
        await self.resolver.label(person_id, name)

    async def end(self, tracks: list[Track]) -> None:
        self.stores.close()


class PerFrame(ResolverPolicy):
    name = "per-frame"

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        shown: list[Shown] = []
        for det, track in zip(detections, tracks):
            r = await self.ask(frame, det, track)
            shown.append((r.person_id, r.name))
        return shown


class PerTrack(ResolverPolicy):
    name = "per-track"

    def __init__(self, state_dir: Path, config: Config) -> None:
        super().__init__(state_dir, config)
        self._tracks: dict[str, Shown] = {}

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        for det, track in zip(detections, tracks):
            if track.id not in self._tracks:
                r = await self.ask(frame, det, track)
                self._tracks[track.id] = (r.person_id, r.name)
        for track in update.ended:
            self._tracks.pop(track.id, None)
        return [self._tracks[t.id] for t in tracks]


@dataclass
class SeedEntry:
    embedding: np.ndarray
    person_id: str
    name: str | None
    sent_ts: float


class SeedWorkshop(ResolverPolicy):
    name = "seed-workshop"

    def __init__(self, state_dir: Path, config: Config) -> None:
        super().__init__(state_dir, config)
        self.threshold = config.identity.name_threshold
        self._cache: deque[SeedEntry] = deque(maxlen=SEED_CACHE_SIZE)  # FIFO: the oldest insert leaves first

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        shown: list[Shown] = []
        for det, track in zip(detections, tracks):
            entry = max(self._cache, key=lambda e: float(e.embedding @ det.embedding), default=None)
            if entry is not None and float(entry.embedding @ det.embedding) >= self.threshold:
                if entry.name is None and frame.ts - entry.sent_ts >= SEED_RESEND_S:
                    r = await self.ask(frame, det, track)  # maybe someone has named them since
                    entry.person_id, entry.name, entry.sent_ts = r.person_id, r.name, frame.ts
                shown.append((entry.person_id, entry.name))
                continue
            r = await self.ask(frame, det, track)
            self._cache.append(SeedEntry(det.embedding, r.person_id, r.name, frame.ts))
            shown.append((r.person_id, r.name))
        return shown


class Facewatchd(Policy):
    """The daemon's own parts, wired as Daemon.run wires them, fed this stream's frames."""

    name = "facewatchd"

    def __init__(self, state_dir: Path, config: Config, embedder: SharedEmbeddings,
                 truth_of_track: dict[str, Detection]) -> None:
        super().__init__()
        self.config = config
        self.embedded = EmbeddedResolver(state_dir, config.resolver, config.detector, config.embedder, config.identity)
        self.link = LocalLink(THING, self.embedded.hub, self._resolve)
        self.cache = FaceCache(state_dir / "cache.db", config.cache, config.identity)
        self.outbox = Outbox(state_dir / "outbox.db", config.uplink.outbox_max_rows)
        self.uplink = Uplink(self.link, self.outbox, config.uplink)
        self.executor = ThreadPoolExecutor(max_workers=config.device.workers, thread_name_prefix="cv")
        self.recognizer = Recognizer(THING, embedder, self.cache, self.uplink, config.uplink,  # type: ignore[arg-type]
                                     self.executor, lambda hook, **kw: None, config.identity, config.quality)
        self.daemon = Daemon(config)  # only for apply_delta, the daemon's own handling of shadow deltas
        self.daemon.recognizer = self.recognizer
        self._truth_of_track = truth_of_track
        self._stop = asyncio.Event()
        self._sent: set[str] = set()
        self.requests = 0

    async def _resolve(self, query: FaceQuery) -> Resolution:
        self.requests += 1
        if query.face_id not in self._sent:  # a resend is not a new call
            self._sent.add(query.face_id)
            det = self._truth_of_track.get(query.track)
            self.calls.append(Call(det.person if det else None, det.visit if det else None))
        return await self.embedded.resolver.resolve(query)

    async def start(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self.link)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self.uplink.run(self._stop)), loop.create_task(self._deltas())]

        async def stop() -> None:
            self._stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        stack.push_async_callback(stop)

    async def _deltas(self) -> None:
        async for delta in self.link.deltas():  # as Daemon._apply_deltas
            clear, reported = self.daemon.apply_delta(delta)
            if clear:
                await self.link.update_shadow({"desired": clear, "reported": reported})

    async def _settle(self, done: Any) -> None:
        """Let the resolver answer and the answer come back through the shadow before the next frame."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    async def frame(self, frame: Frame, detections: list[Detection], tracks: list[Track],
                    update: TrackUpdate) -> list[Shown]:
        await self.recognizer.process(frame, update)
        await self._settle(lambda: self.uplink.pending == 0)
        return [(t.person_id, t.name) for t in tracks]

    async def end(self, tracks: list[Track]) -> None:
        for t in tracks:
            await self.recognizer.end(t)
        await self._settle(lambda: self.uplink.pending == 0)
        self.cache.close()
        self.outbox.close()
        self.embedded.close()
        self.executor.shutdown(wait=True)

    async def label(self, person_id: str, name: str) -> None:
        await self.embedded.resolver.label(person_id, name)
        await self._settle(lambda: self.cache.persons().get(person_id, name) == name)

