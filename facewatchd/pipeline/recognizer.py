"""The recognizer: turns tracks into named faces using the cache first and the resolver only when needed.

Per track: embed the first view and look it up in the cache (a known face is named at once, no
resolver call). An unknown track collects its first frames, keeps the best view (size, detector
score, sharpness), embeds that one if it is not the first, tries the cache again, and only then sends
one request. A second unknown track whose embedding matches a pending request joins it instead of
sending another.

Naming, and the resolver's answers and the operator's corrections, are in `answers.py` (`Answers`); a name
is access control, so a track's name is never taken on trust from the track alone:
- a named or pending track is embedded again when its face stops looking like the view last embedded (a
  cheap check at every frame, vision/appearance.py), when its box jumps, after a crossing, at least every
  `identity.reverify_max_s`, and every `identity.reverify_frames` frames for the tracks a decision acts on
  (`evidence_demands`: the door's); an embedding that does not verify against the track's person (or pending
  face) splits the track, and the new part is recognised from scratch (a face replaced in place by another's);
- each verified embedding is fresh evidence, min(similarity, the matched view's trust), which the
  events carry (`FaceEvent.evidence`) so the door acts on independent, recent embeddings;
- a view is learnt into the cache only at `identity.learn_threshold` (FaceCache.add_view).
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from concurrent.futures import Executor
from typing import Sequence

import numpy as np
import structlog

from facewatchd.events import TrackEnded
from facewatchd.identity import IdentityConfig, box_jumped
from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.pipeline.answers import Answers, HookFirer, RecognizerStats
from facewatchd.pipeline.cache import CacheHit, FaceCache
from facewatchd.pipeline.camera import Frame
from facewatchd.pipeline.demand import TrackDemand, wanted
from facewatchd.pipeline.health import StageClock
from facewatchd.pipeline.tracker import Track, TrackUpdate, iou
from facewatchd.pipeline.uplink import Uplink, UplinkConfig, crop_with_margin
from facewatchd.pipeline.views import View, rank
from facewatchd.vision.appearance import resemblance, signature
from facewatchd.vision.detector import Face
from facewatchd.vision.embedder import SFaceEmbedder
from facewatchd.vision.quality import QualityConfig

__all__ = ["HookFirer", "Recognizer", "RecognizerStats"]

log = structlog.get_logger("facewatchd.recognizer")

ENDED_TRACKS_KEPT = 4096  # ended tracks remembered for co-visibility (who was in frame with whom)


class Recognizer(Answers):
    def __init__(self, thing: str, embedder: SFaceEmbedder, cache: FaceCache, uplink: Uplink,
                 config: UplinkConfig, executor: Executor, fire: HookFirer,
                 identity: IdentityConfig | None = None, quality: QualityConfig | None = None,
                 evidence_demands: Sequence[TrackDemand] = ()) -> None:
        self.thing = thing
        self.identity = identity or cache.identity
        self.quality = quality or QualityConfig()
        self.embedder = embedder
        self.cache = cache
        self.uplink = uplink
        self.config = config
        self.executor = executor
        self.fire = fire
        self.evidence_demands = list(evidence_demands)
        self.stats = RecognizerStats()
        self.embed_clock = StageClock()  # the network's time per camera, for the health line
        self._live: dict[str, Track] = {}
        self._pending_tracks: Counter[str] = Counter()  # face id → ended tracks still waiting for its answer
        self._ended: OrderedDict[str, Track] = OrderedDict()

    # -- CV in the thread pool ------------------------------------------------------------------
    def _view_sync(self, image: np.ndarray, face: Face, ts: float) -> View:
        aligned = self.embedder.align(image, face)
        crop = crop_with_margin(image, face, self.config.crop_margin)
        return View(rank(face, aligned), aligned, crop, face, ts, signature(image, face))

    def _embed_sync(self, view: View, mirror: bool, camera: str) -> tuple[np.ndarray, float]:
        with self.embed_clock.timing(camera):
            embeddings, norms = self.embedder.embed_batch_with_norms([view.aligned], None if mirror else False)
        return embeddings[0], float(norms[0])

    def _first_views_sync(self, image: np.ndarray, faces: list[Face], ts: float, camera: str) -> list[View]:
        """Views of faces that appeared in one frame, embedded in one batched forward pass."""
        views = [self._view_sync(image, face, ts) for face in faces]
        with self.embed_clock.timing(camera):
            embeddings, norms = self.embedder.embed_batch_with_norms([v.aligned for v in views])
        for view, embedding, norm in zip(views, embeddings, norms):
            view.embedded(embedding, float(norm))
        return views

    async def _view(self, frame: Frame, face: Face) -> View:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._view_sync, frame.image, face,
                                                                frame.ts)

    async def _embedding(self, view: View, mirror: bool, camera: str) -> tuple[np.ndarray, float]:
        self.stats.embeds += 1
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._embed_sync, view, mirror, camera)

    async def _embed(self, track: Track, view: View, frame_index: int, mirror: bool = True) -> np.ndarray:
        if view.embedding is None:
            view.embedded(*await self._embedding(view, mirror, track.camera))
            track.embeds += 1
        track.embedding, track.embedded_frame, track.embedded_ts = view.embedding, frame_index, view.ts
        track.appearance = view.appearance  # what the cheap check compares the next frames with
        return view.embedding

    # -- the frame loop -------------------------------------------------------------------------
    async def process(self, frame: Frame, update: TrackUpdate) -> None:
        present = update.started + update.continued
        self.stats.faces += len(present)
        if len(present) > 1:
            ids = {t.id for t in present}
            for t in present:
                t.seen_with |= ids - {t.id}
            self._mark_crossings(present)
        views: list[View] = []
        if update.started:  # faces that appear together are embedded together: one forward pass
            views = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._first_views_sync, frame.image, [t.face for t in update.started], frame.ts,
                frame.camera)
            self.stats.embeds += len(views)
        for track, view in zip(update.started, views):
            self.stats.tracks += 1
            track.embeds += 1
            self._live[track.id] = track
            self.fire("face_detected", event=self._event(track))
            await self._first_look(frame, track, view)
        for track in update.continued:
            await self._follow(frame, track)
        for track in update.ended:
            await self.end(track)

    async def _first_look(self, frame: Frame, track: Track, view: View | None = None) -> None:
        view = view or await self._view(frame, track.face)
        track.best, track.best_quality, track.first_view = view, view.rank, view
        emb = await self._embed(track, view, frame.index)
        track.embedded_quality = view.rank
        if not self._use_cache(track, self._match(track, emb), view, frame.ts):
            track.state = "collecting"
            if track.hits >= self.config.best_of_frames:
                await self._send(track)

    async def _follow(self, frame: Frame, track: Track) -> None:
        previous, track.previous_box = track.previous_box, track.face.box
        if track.state == "collecting":
            view = await self._view(frame, track.face)
            if view.rank > track.best_quality:
                track.best, track.best_quality = view, view.rank
            if track.hits >= self.config.best_of_frames:
                await self._send(track)
            return
        if track.state == "known":
            track.agreed_frames += 1
        elif track.state == "pending":
            track.agreed_frames += 1
        else:
            return
        crossed = track.crossing == "apart"  # two faces met and parted: the tracker may have swapped them
        if crossed or self._reverify_due(frame, track, previous):
            track.crossing = None if crossed else track.crossing
            await self._reverify(frame, track)

    def _reverify_due(self, frame: Frame, track: Track,
                      previous: tuple[float, float, float, float] | None) -> bool:
        """Whether a named or pending track is embedded again at this frame."""
        if previous is not None and box_jumped(previous, track.face.box, self.identity.reverify_jump):
            return True
        if wanted(self.evidence_demands, track):  # a decision acts on it: fresh embeddings on a beat
            if frame.index - track.embedded_frame >= self.identity.reverify_frames:
                return True
        elif frame.ts - track.embedded_ts >= self.identity.reverify_max_s:
            return True
        if track.appearance is None:
            return True
        # The cheap check, on the loop: a 24x24 warp and correlation (about 0.1 ms) cost less than a thread hop.
        # Another face (far below) is checked at once; a face that keeps changing (a speaker's gestures) no more
        # often than the old beat, so a swap to a look-alike is still split within reverify_change_frames.
        alike = resemblance(track.appearance, signature(frame.image, track.face))
        since = frame.index - track.embedded_frame
        if alike < self.identity.reverify_unlike or (alike < self.identity.reverify_resemblance
                                                     and since >= self.identity.reverify_change_frames):
            self.stats.appearance_changes += 1
            return True
        return False

    @staticmethod
    def _mark_crossings(present: list[Track]) -> None:
        """Faces whose boxes overlap can be swapped by the tracker when they part: each such track is
        re-verified as soon as it stands alone again (`crossing`: "overlap" → "apart" → checked)."""
        for t in present:
            overlapping = any(iou(t.face.box, o.face.box) > 0 for o in present if o is not t)
            if overlapping:
                t.crossing = "overlap"
            elif t.crossing == "overlap":
                t.crossing = "apart"

    async def _reverify(self, frame: Frame, track: Track) -> None:
        """Embed the track again and check it is still who it was named (or is pending) as; a face that
        does not verify splits the track, and a face that does is fresh evidence."""
        view = await self._view(frame, track.face)
        before = track.embedding  # the face the track was: what its part keeps if this one splits off
        # Without the mirror image: half the cost, and a check against a person already named, not a
        # search (bench/openset.py: plain and flip-averaged embeddings name strangers at the same rate).
        emb = await self._embed(track, view, frame.index, mirror=False)
        self.stats.reverifications += 1
        if track.state == "pending":
            reference = f"pending:{track.face_id}"
        elif track.person_id:
            reference = track.person_id
        else:
            return  # seen, but nobody (a forgotten person): nothing to verify against
        similarity, evidence = self.cache.similarity(reference, emb)
        if similarity < -0.5:
            return  # no views left (forgotten, evicted, or answered meanwhile): nothing to compare
        if similarity < self.identity.verify_threshold:
            track.embedding = before
            await self._split(frame, track, view, similarity)
            return
        if track.state == "known" and track.person_id:
            self._add_evidence(track, frame.ts, evidence)
            if self.cache.worth_learning(similarity, evidence) and not view.failures(self.quality):
                # A view is learnt as searches will use it: flip-averaged (one lucky plain frame is not kept);
                # asked first, so a view that would not be kept costs no second embedding
                learnt, _ = await self._embedding(view, True, track.camera)
                if self.cache.add_view(track.person_id, track.name, learnt):
                    log.debug("cache_view_added", camera=track.camera, track_id=track.id, person_id=track.person_id)
            self.fire("face_recognised" if track.name else "unknown_face", event=self._event(track, "verified"))

    async def _split(self, frame: Frame, track: Track, view: View, similarity: float) -> None:
        ended = track.split(frame.index, frame.ts)
        self.stats.splits += 1
        log.warning("track_split", camera=track.camera, track_id=ended.id, new_track_id=track.id,
                    person_id=ended.person_id, similarity=round(similarity, 3),
                    reason="face does not verify against the track's person")
        await self.end(ended)
        self.stats.tracks += 1
        self._live[track.id] = track
        self.fire("face_detected", event=self._event(track))
        view.embedding = None  # the new track is looked up as any first look is: with the mirror image
        await self._first_look(frame, track, view)  # the view that failed is the new track's first

    def _use_cache(self, track: Track, hit: CacheHit | None, view: View, ts: float) -> bool:
        """Name the track from the cache, or attach it to a pending request. False on a miss."""
        emb = view.embedding
        assert emb is not None
        if hit is None:
            return False
        self.cache.touch(hit.entry)
        if hit.entry.pending:
            track.state, track.face_id, track.similarity = "pending", hit.entry.face_id, hit.similarity
            track.joined = True
            self.stats.joined_pending += 1
            log.info("face_pending_joined", camera=track.camera, track_id=track.id, face_id=track.face_id,
                     person_id=None)
            return True
        assert hit.entry.person_id is not None
        self.stats.cache_hits += 1
        _, evidence = self.cache.similarity(hit.entry.person_id, emb)
        track.origin = hit.entry.origin or hit.entry.face_id
        self._add_evidence(track, ts, evidence)
        self._name(track, hit.entry.person_id, hit.entry.name, evidence, "cache")
        if not view.failures(self.quality):  # learnt only if it verifies strongly, and only a face worth naming
            self.cache.add_view(hit.entry.person_id, hit.entry.name, emb)
        return True

    async def _send(self, track: Track) -> None:
        view = track.best
        assert isinstance(view, View)
        if view.checked and view.failures(self.quality):
            return  # the best view so far was found not worth naming: wait for a better one
        # The face this track started on, if its first look was worth naming: a dark or blurred first look's
        # embedding says too little to tell a swapped face from the same face come into the light.
        start = track.first_view if isinstance(track.first_view, View) else None
        first = start.embedding if start is not None and not start.failures(self.quality) else None
        if view.embedding is None:  # the best view is not the first: embed it
            await self._embed(track, view, track.last_frame)
            track.embedded_quality = view.rank
        assert view.embedding is not None
        if first is not None and float(view.embedding @ first) < self.identity.verify_threshold:
            # The best view is of another face (the tracker swapped two people while this one collected):
            # ask about the face the track started on, and split the rest off at the next frame.
            log.warning("best_view_not_the_tracked_face", camera=track.camera, track_id=track.id)
            assert isinstance(track.first_view, View)
            view = track.first_view
            track.embedded_frame, track.embedded_ts = -(1 << 30), float("-inf")
        track.embedding = view.embedding
        # Look again: while this track collected frames another track of the same person may have asked.
        if self._use_cache(track, self._match(track, view.embedding), view, view.ts):
            return
        if view.failures(self.quality):
            # Not worth naming (dark, blurred, small, turned, unreadable to SFace): it never becomes a person,
            # a template or a review card. The track keeps collecting; a better view may still come. It is
            # still someone present: said once, as an unknown face (presence, "unknown person present").
            self.stats.views_gated += 1
            if not track.not_worth_naming:
                track.not_worth_naming = True
                self.fire("unknown_face", event=self._event(track, "not worth naming"))
            return
        face_id = new_face_id()
        self.cache.add_pending(face_id, view.embedding)
        other_faces, other_persons = self._others(track)
        query = FaceQuery(face_id, self.thing, track.camera, track.id, self._jpeg(view), view.embedding, view.ts,
                          tuple(sorted(other_faces)), tuple(sorted(other_persons)))
        for dropped in self.uplink.submit(query):
            self._forget_query(dropped)
        self.drop_unanswerable()
        track.state, track.face_id, track.joined = "pending", face_id, False
        self.stats.resolver_calls += 1
        log.info("face_query_sent", camera=track.camera, track_id=track.id, face_id=face_id, person_id=None,
                 rank=round(view.rank, 3), quality=view.quality().as_dict())

    async def end(self, track: Track) -> None:
        track.gone = True
        if track.state == "collecting":
            await self._send(track)  # a short visit is still an unknown face worth resolving
        if track.state == "collecting" and isinstance(track.best, View) and track.best.checked:
            # no view worth naming: a face for footfall and presence, never a person
            self.stats.tracks_gated += 1
            log.info("track_not_worth_naming", camera=track.camera, track_id=track.id,
                     why=track.best.failures(self.quality), quality=track.best.quality().as_dict())
        self._live.pop(track.id, None)
        if track.state == "pending" and track.face_id:
            self._pending_tracks[track.face_id] += 1
        track.best = track.first_view = None  # keep only the ids of an ended track, not its images
        track.landmarks, track.appearance = [], None
        self._ended[track.id] = track
        while len(self._ended) > ENDED_TRACKS_KEPT:
            self._ended.popitem(last=False)
        event = self._event(track)
        self.fire("track_ended", event=TrackEnded(event, track.last_ts - track.first_ts, track.hits))
        log.info("track_ended", camera=track.camera, track_id=track.id, person_id=track.person_id, name=track.name,
                 frames=track.hits, dwell_s=round(track.last_ts - track.first_ts, 2))
