"""How a track gets and loses its name: named (from the cache or the resolver), the resolver's answers for
the faces this device asked about (the asking track, the tracks that joined its query, the tracks that
ended while it was pending), and the operator's corrections (a face moved or rejected, persons merged,
renamed or forgotten), applied to live and ended tracks alike.

A track that joined another track's pending query is named by the answer only if its own embedding verifies
against the named person; otherwise it asks on its own. The recognizer's frame loop is in `recognizer.py`.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np
import structlog

from facewatchd.events import FaceEvent
from facewatchd.pipeline.cache import CacheHit, FaceCache
from facewatchd.pipeline.tracker import Track
from facewatchd.pipeline.uplink import Uplink, UplinkConfig, encode_jpeg
from facewatchd.pipeline.views import View

log = structlog.get_logger("facewatchd.recognizer")

EVIDENCE_KEPT = 16  # latest verified embeddings per track that the events carry


@dataclass
class RecognizerStats:
    faces: int = 0
    tracks: int = 0
    embeds: int = 0
    cache_hits: int = 0
    joined_pending: int = 0
    joined_unverified: int = 0  # joined tracks the answer did not name: their own face did not verify
    splits: int = 0  # tracks split because a new embedding did not verify against their person
    views_gated: int = 0  # best views not sent: below the quality gate
    tracks_gated: int = 0  # tracks that ended with no view worth naming (unidentified)
    reverifications: int = 0
    appearance_changes: int = 0  # re-verifications the cheap appearance check asked for
    resolver_calls: int = 0
    labels_applied: int = 0
    unknown_labels: int = 0
    person_tracks: Counter[str] = field(default_factory=Counter)  # person id → tracks named as them
    names: dict[str, str | None] = field(default_factory=dict)  # person id → name


class HookFirer:
    def __call__(self, hook: str, **kwargs: object) -> None: ...


class Answers:
    """Naming tracks and applying answers and corrections; the recognizer (its subclass) sets the attributes."""

    thing: str
    cache: FaceCache
    uplink: Uplink
    config: UplinkConfig
    fire: HookFirer
    stats: RecognizerStats
    _live: dict[str, Track]
    _pending_tracks: Counter[str]  # face id → ended tracks still waiting for its answer
    _ended: OrderedDict[str, Track]

    def _name(self, track: Track, person_id: str | None, name: str | None, similarity: float, source: str) -> None:
        track.state, track.person_id, track.name, track.similarity = "known", person_id, name, similarity
        track.agreed_frames = max(track.agreed_frames, 1)
        if person_id:
            self.stats.person_tracks[person_id] += 1
            self.stats.names[person_id] = name
        log.info("face_recognised", camera=track.camera, track_id=track.id, person_id=person_id, name=name,
                 similarity=round(similarity, 3), source=source)
        event = self._event(track, source)
        self.fire("face_recognised" if name else "unknown_face", event=event)

    def _add_evidence(self, track: Track, ts: float, evidence: float) -> None:
        track.evidence.append((ts, evidence))
        del track.evidence[:-EVIDENCE_KEPT]
        track.similarity = evidence

    def _others(self, track: Track) -> tuple[set[str], set[str]]:
        """Face ids and person ids of the tracks seen in the same frame as this one."""
        faces: set[str] = set()
        persons: set[str] = set()
        for tid in track.seen_with:
            other = self._live.get(tid) or self._ended.get(tid)
            if other is not None:
                if other.face_id:
                    faces.add(other.face_id)
                if other.person_id:
                    persons.add(other.person_id)
        return faces, persons

    def _match(self, track: Track, embedding: np.ndarray) -> CacheHit | None:
        if not track.seen_with:
            return self.cache.match(embedding)
        faces, persons = self._others(track)
        return self.cache.match(embedding, not_persons=persons, not_faces=faces)

    def apply_label(self, face_id: str, person_id: str, name: str | None, similarity: float) -> bool:
        """The resolver's answer for a face id (or an operator's move of that face to another person);
        returns False for a face id this device never sent."""
        was_pending = any(e.pending for e in self.cache.entries() if e.face_id == face_id)
        entries = self.cache.resolve(face_id, person_id, name, similarity)
        acked = self.uplink.acknowledge(face_id)
        # only tracks still waiting: the same answer can arrive twice (a resend, a repeated delta)
        tracks = [t for t in self._live.values() if t.face_id == face_id and t.state == "pending"]
        if not (was_pending or acked or tracks):
            if not entries:
                self.stats.unknown_labels += 1
                log.warning("label_for_unknown_face", face_id=face_id, person_id=person_id)
                return False
            self._moved(face_id, person_id, name)
            return True  # a repeat of an answer already applied, or a face moved to another person
        self.stats.labels_applied += 1
        self.stats.names[person_id] = name
        for t in tracks:
            if not t.joined:  # the track that asked: the resolver compared its own view
                t.origin = face_id
                self._add_evidence(t, t.last_ts, similarity)
                self._name(t, person_id, name, similarity, "resolver")
            elif (evidence := self._verify_joined(t, person_id)) is not None:
                t.origin = face_id
                self._add_evidence(t, t.last_ts, evidence)
                self._name(t, person_id, name, evidence, "resolver")
            else:  # its own face does not verify: it asks for itself at its next frame
                t.state, t.face_id, t.joined, t.similarity = "collecting", None, False, 0.0
                self.stats.joined_unverified += 1
                log.warning("joined_track_not_verified", camera=t.camera, track_id=t.id, face_id=face_id,
                            person_id=person_id)
        # tracks that already ended while the request was pending
        waiting = self._pending_tracks.pop(face_id, 0)
        for t in self._ended.values():
            if t.face_id == face_id and t.person_id is None:
                evidence = self._verify_joined(t, person_id) if t.joined else similarity
                if evidence is None:
                    waiting -= 1
                    continue
                t.person_id, t.name, t.similarity = person_id, name, evidence
                # a short visit, a slow resolver: the face left before its answer came, and was still seen
                self.fire("face_recognised" if name else "unknown_face", event=self._event(t, "resolver"))
        self.stats.person_tracks[person_id] += max(0, waiting)
        return True

    def drop_unanswerable(self) -> None:
        """Forget the queries the uplink gave up on (expired, unsendable): the next sighting asks again."""
        for face_id in self.uplink.take_rejected():
            self._forget_query(face_id)

    def _forget_query(self, face_id: str) -> None:
        self.cache.drop_face(face_id)
        self._pending_tracks.pop(face_id, None)

    def unresolvable(self, face_id: str, reason: str) -> None:
        """The resolver refused a face it can never resolve (no face in the crop, an unreadable image):
        stop asking. Tracks waiting on it stay unnamed and do not ask again."""
        known = self.uplink.acknowledge(face_id)
        self._forget_query(face_id)
        for t in self._live.values():
            if t.face_id == face_id and t.state == "pending":
                t.state = "unresolvable"
        if known:
            self.uplink.stats.unresolvable += 1
            log.warning("face_unresolvable", face_id=face_id, reason=reason)

    def _verify_joined(self, track: Track, person_id: str) -> float | None:
        """The evidence of a track's own embedding for `person_id`, if the cache names it so; else None."""
        if track.embedding is None:
            return None
        hit = self._match(track, track.embedding)
        if hit is None or hit.entry.person_id != person_id:
            return None
        return self.cache.similarity(person_id, track.embedding)[1]

    def _moved(self, face_id: str, person_id: str, name: str | None) -> None:
        """An operator moved a face to another person: live tracks named from it follow."""
        for t in self._live.values():
            if t.origin == face_id and t.person_id != person_id:
                t.person_id, t.name = person_id, name

    def reject_face(self, face_id: str) -> int:
        """"Not this person": the face's views leave the cache, and live tracks named from them are
        recognised again from scratch."""
        dropped = self.cache.reject(face_id)
        for t in self._live.values():
            if t.origin == face_id and t.state == "known":
                t.state, t.person_id, t.name, t.similarity, t.origin = "collecting", None, None, 0.0, None
                t.evidence.clear()
        log.info("face_rejected", face_id=face_id, cached_views=dropped)
        return dropped

    def merge_person(self, gone: str, keep: str, name: str | None) -> None:
        """Person `gone` was `keep`: cached views and live tracks follow."""
        moved = self.cache.merge(gone, keep, name)
        self.stats.names.pop(gone, None)
        if moved or gone in self.stats.person_tracks:
            self.stats.names[keep] = name
        self.stats.person_tracks[keep] += self.stats.person_tracks.pop(gone, 0)
        for t in list(self._live.values()) + list(self._ended.values()):
            if t.person_id == gone:
                t.person_id, t.name = keep, name
        self.fire("person_labelled", person_id=keep, name=name, previous=name)
        log.info("persons_merged", gone=gone, keep=keep, cached_views=moved)

    def apply_person(self, person_id: str, name: str | None, forget: bool) -> None:
        previous = self.stats.names.get(person_id)
        if forget:
            self.cache.forget(person_id)
            self.stats.names.pop(person_id, None)
        else:
            self.cache.rename(person_id, name)
            if person_id in self.stats.names or any(t.person_id == person_id for t in self._live.values()):
                self.stats.names[person_id] = name
        for t in self._live.values():
            if t.person_id == person_id:
                if forget:  # the track stays seen but nobody; no view of it may bring the person back
                    t.person_id, t.name = None, None
                else:
                    t.name = name
        self.fire("person_labelled", person_id=person_id, name=None if forget else name, previous=previous)
        log.info("person_labelled", person_id=person_id, name=name, forget=forget, previous=previous)

    def _event(self, track: Track, source: str = "") -> FaceEvent:
        view = track.best if isinstance(track.best, View) else None
        return FaceEvent(camera=track.camera, track_id=track.id, ts=track.last_ts, person_id=track.person_id,
                         name=track.name, similarity=track.similarity, agreed_frames=track.agreed_frames,
                         evidence=tuple(track.evidence),
                         face_id=track.face_id, box=track.face.box, score=track.face.score,
                         crop_jpeg=None if view is None else self._jpeg(view), source=source, gone=track.gone,
                         liveness=tuple(track.liveness))

    event = _event  # what other stages (pipeline/liveness.py) describe a track with

    def _jpeg(self, view: View) -> bytes:
        if view.jpeg is None:
            view.jpeg = encode_jpeg(view.crop, self.config)
        return view.jpeg
