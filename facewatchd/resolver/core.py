"""The resolver core: the seed design's flow with no I/O of its own.

store the crop → search the collection → decide who it is (`facewatchd.identity`) → index it as a new
person if nobody, or as another template of the person when it verifies strongly enough → look up the
name → answer through the shadow. Idempotent by face id, so a redelivered message changes nothing.

A face in the uncertain band (near someone, not near enough to be named) is not merged into that
person: it becomes a new person marked "possibly X", for review. The operator's corrections (merge,
move a face, reject a face) change the collection, the records and every device's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import AsyncContextManager, AsyncIterator, Callable, Iterable

import structlog

from facewatchd.identity import Decision, IdentityConfig, decide, weak_link
from facewatchd.messages import (FaceQuery, Resolution, face_label_patch, face_reject_patch,
                                 face_unresolvable_patch, person_label_patch, person_merge_patch)
from facewatchd.resolver.ports import (CropStore, Enrollment, FaceCollection, FaceRecord, Match, NameDirectory, NameTaken,
                                       Person, ShadowPort)

log = structlog.get_logger("facewatchd.resolver")

DAY_S = 86_400.0


def new_person_id() -> str:
    return f"person-{uuid.uuid4().hex[:10]}"


def unseen_unnamed(persons: Iterable[Person], now: float, days: float) -> list[Person]:
    """The persons retention forgets: unnamed, and not seen (a face resolved, or named by a device's cache:
    `last_seen`) for more than `days` days. A name is an operator's decision to keep someone, so a named
    person never expires here."""
    cutoff = now - days * DAY_S
    return [p for p in persons if p.name is None and p.last_seen < cutoff]


def clean_name(name: str) -> str:
    """A name as kept: trimmed, and never empty."""
    name = name.strip()
    if not name:
        raise ValueError("a name cannot be empty")
    return name


def holder_of(persons: Iterable[Person], name: str) -> Person | None:
    """The person who holds `name`, compared as people read it (trimmed, any case)."""
    key = name.strip().casefold()
    return next((p for p in persons if p.name is not None and p.name.strip().casefold() == key), None)


@contextlib.asynccontextmanager
async def alone() -> AsyncIterator[None]:
    """Deciding with no lock: one process that resolves one face at a time."""
    yield


@dataclass
class ResolverStats:
    requests: int = 0
    duplicates: int = 0
    searches: int = 0
    indexed: int = 0
    templates: int = 0  # faces indexed as another template of a person already known
    uncertain: int = 0  # new persons made from the uncertain band


class Resolver:
    def __init__(self, crops: CropStore, collection: FaceCollection, names: NameDirectory, shadow: ShadowPort,
                 identity: IdentityConfig, templates_per_person: int = 5,
                 clock: Callable[[], float] = time.time,
                 deciding: Callable[[], AsyncContextManager[None]] = alone) -> None:
        self.crops = crops
        self.collection = collection
        self.names = names
        self.shadow = shadow
        self.identity = identity
        self.templates_per_person = templates_per_person
        self.stats = ResolverStats()
        self._clock = clock  # the name directory's clock: a weak link compares with its last sightings
        # A name given while retention forgets that person must win: both take this lock (one process;
        # Lambdas are separate processes, and there the window stays, see deploy/lambda/README.md)
        self._naming = asyncio.Lock()
        # Held from the re-check of the face id to its record, so that resolvers sharing a collection (workers
        # on PostgreSQL: an advisory lock) never both miss a new person and enrol them twice. The crop is
        # stored before it and the answer sent after it: the lock is held only for the decision.
        self._deciding = deciding

    async def identify(self, query: FaceQuery) -> Decision:
        """Who the face is, by the same rule the product acts on; changes nothing."""
        exclude = await self._other_persons(query)
        templates = await self.collection.count_templates() if self.identity.fpir is not None else 0
        self.stats.searches += 1
        threshold = self.identity.search_threshold
        match = (await self.collection.search(query, threshold, exclude) if exclude
                 else await self.collection.search(query, threshold))
        return decide(None if match is None else (match.person_id, match.similarity), templates, self.identity)

    async def resolve(self, query: FaceQuery) -> Resolution:
        """A device's unknown face. Its embedding is dropped: a device's numbers are never trusted (one made-up
        vector could name strangers as an enrolled person and open their door), so the collection finds and
        embeds the face in the crop itself, as Rekognition does on AWS."""
        query = dataclasses.replace(query, embedding=None)
        self.stats.requests += 1
        done = await self.names.handled(query.face_id)
        if done is None:
            crop_key = await self.crops.put(query)  # idempotent, keyed by the face id: safe before the lock
            async with self._deciding():
                if self._deciding is not alone:  # another resolver may have recorded it meanwhile
                    done = await self.names.handled(query.face_id)
                if done is None:
                    resolution, decision, face_ref = await self._decide(query, crop_key)
        if done is not None:
            # Redelivery: answer again (the device may have missed it), change nothing.
            self.stats.duplicates += 1
            await self.shadow.update_desired(query.thing, face_label_patch(done))
            return done
        await self.shadow.update_desired(query.thing, face_label_patch(resolution))
        log.info("face_resolved", face_id=query.face_id, thing=query.thing, camera=query.camera,
                 track_id=query.track, person_id=resolution.person_id, name=resolution.name,
                 similarity=round(resolution.similarity, 3), new_person=resolution.new_person,
                 decision=decision.kind, nearest=decision.person_id, nearest_similarity=round(decision.similarity, 3),
                 template=face_ref is not None and decision.named)
        return resolution

    async def _decide(self, query: FaceQuery, crop_key: str) -> tuple[Resolution, Decision, str | None]:
        """Search, decide, index if new or learnt, record: the resolution kept, the decision, the template."""
        decision = await self.identify(query)
        face_ref: str | None = None
        if decision.named:
            assert decision.person_id is not None
            person = await self.names.get(decision.person_id)
            resolution = Resolution(query.face_id, decision.person_id, person.name if person else None,
                                    decision.similarity, new_person=person is None)
            if person is not None and self._learns(decision, person):
                face_ref = await self.collection.index(query, decision.person_id)
                self.stats.templates += 1
        else:
            person_id = new_person_id()
            face_ref = await self.collection.index(query, person_id)
            self.stats.indexed += 1
            self.stats.uncertain += decision.kind == "uncertain"
            possibly = decision.person_id if decision.kind == "uncertain" else await self._weak_link(query, decision)
            resolution = Resolution(query.face_id, person_id, None, 1.0, new_person=True, possibly=possibly)
        await self.names.record(resolution, query.thing, crop_key, face_ref, query.camera, query.track)
        # A concurrent duplicate may have recorded first (the write is conditional): answer what was kept.
        return await self.names.handled(query.face_id) or resolution, decision, face_ref

    async def refuse(self, thing: str, face_id: str, reason: str) -> None:
        """Answer a face that can never be resolved (no face, an unreadable image), so the device stops
        asking; nothing is stored."""
        await self.shadow.update_desired(thing, face_unresolvable_patch(face_id, reason))
        log.info("face_refused", face_id=face_id, thing=thing, reason=reason)

    async def _weak_link(self, query: FaceQuery, decision: Decision) -> str | None:
        """A new face's nearest person, when seen on this camera minutes ago (`identity.weak_link`)."""
        nearest = await self.names.get(decision.nearest) if decision.nearest else None
        there = nearest.last_seen_on.get(f"{query.thing}/{query.camera}") if nearest else None
        return weak_link(decision, there, self._clock(), self.identity)

    def _learns(self, decision: Decision, person: Person) -> bool:
        """A named face becomes another template of its person only when it verifies at the learning
        threshold (one false match must never become a view that matches strangers) and the person has
        room for it."""
        return decision.similarity >= self.identity.learn_threshold and person.templates < self.templates_per_person

    async def _other_persons(self, query: FaceQuery) -> frozenset[str]:
        """Persons this face cannot be: those of faces seen in the same frame."""
        persons = set(query.other_persons)
        for face_id in query.other_faces:
            done = await self.names.handled(face_id)
            if done is not None:
                persons.add(done.person_id)
        return frozenset(persons)

    # -- operator actions -----------------------------------------------------------------------
    async def label(self, person_id: str, name: str) -> Person:
        """Name a person and push the name to every device that holds them. A name another person holds is
        refused (NameTaken): one name, one person, so a split is merged instead."""
        name = clean_name(name)
        async with self._naming:
            if await self.names.get(person_id) is None:
                raise KeyError(person_id)
            holder = holder_of(await self.names.list(), name)
            if holder is not None and holder.person_id != person_id:
                raise NameTaken.of(name, holder.person_id, person_id)
            person = await self.names.set_name(person_id, name)
        for thing in person.things:
            await self.shadow.update_desired(thing, person_label_patch(person_id, name))
        return person

    async def forget(self, person_id: str) -> Person:
        """Remove a person everywhere: collection, crops, records, and every device's cache."""
        person = await self.names.get(person_id)
        if person is None:
            raise KeyError(person_id)
        await self.collection.delete_person(person_id)
        keys = await self.names.forget(person_id)
        await self.crops.delete(keys)
        for thing in person.things:
            await self.shadow.update_desired(thing, person_label_patch(person_id, None, forget=True))
        return person

    async def seen(self, person_id: str, ts: float) -> None:
        """A device's own cache named a face of the person at `ts` (no resolver call): retention counts it
        as a sighting, so someone the cache names every day is never taken for gone."""
        await self.names.seen(person_id, ts)

    async def forget_unseen(self, days: float, now: float) -> list[Person]:
        """Retention: forget (everywhere, as `forget` does) every unnamed person not seen for `days` days
        at `now`. Returns those forgotten."""
        forgotten: list[Person] = []
        for candidate in unseen_unnamed(await self.names.list(), now, days):
            async with self._naming:
                # Read again: a person named or seen since the list was read stays.
                current = await self.names.get(candidate.person_id)
                if current is None or not unseen_unnamed([current], now, days):
                    continue
                try:
                    forgotten.append(await self.forget(candidate.person_id))
                except KeyError:  # forgotten by an operator meanwhile
                    continue
            log.info("person_expired", person_id=candidate.person_id, last_seen=current.last_seen, days=days,
                     things=current.things, faces=len(current.faces))
        return forgotten

    async def move(self, face_id: str, person_id: str) -> Person:
        """One face was the wrong person: it (its template, record and every device's views learnt from it)
        becomes `person_id`'s. Raises KeyError for an unknown face or person."""
        face = await self._face(face_id)
        target = await self.names.get(person_id)
        if target is None:
            raise KeyError(person_id)
        if face.person_id == person_id:
            return target
        previous = await self.names.get(face.person_id)
        await self._move_face(face, person_id)
        target = await self.names.get(person_id)
        assert target is not None
        label = Resolution(face_id, person_id, target.name, 1.0, new_person=False)
        for thing in sorted(set(target.things) | set(previous.things if previous else [])):
            await self.shadow.update_desired(thing, face_label_patch(label))
        log.info("face_moved", face_id=face_id, from_person=face.person_id, to_person=person_id)
        return target

    async def reject(self, face_id: str) -> Person:
        """"Not this person": the face leaves its person everywhere (template, record, crop, and every
        device's views learnt from it). Returns the person it was taken from."""
        face = await self._face(face_id)
        person = await self.names.get(face.person_id)
        if face.face_ref:
            await self.collection.delete_faces([face.face_ref])
        await self.names.remove_face(face_id)
        await self.crops.delete([face.crop_key] if face.crop_key else [])
        things = sorted(set(person.things if person else []) | {face.thing} - {""})
        for thing in things:
            await self.shadow.update_desired(thing, face_reject_patch(face_id))
        log.info("face_rejected", face_id=face_id, person_id=face.person_id)
        return await self.names.get(face.person_id) or Person(face.person_id, None)

    async def merge(self, keep: str, gone: str) -> Person:
        """`gone` was `keep` all along: every face, template and device view of `gone` becomes `keep`'s."""
        if keep == gone:
            raise ValueError("a person cannot be merged into itself")
        target, source = await self.names.get(keep), await self.names.get(gone)
        if target is None or source is None:
            raise KeyError(keep if target is None else gone)
        for face_id in source.faces:
            face = await self.names.face(face_id)
            if face is not None:
                await self._move_face(face, keep)
        await self.names.forget(gone)  # only the profile is left by now
        merged = await self.names.get(keep)
        assert merged is not None
        for thing in sorted(set(source.things) | set(merged.things)):
            await self.shadow.update_desired(thing, person_merge_patch(gone, keep, merged.name))
        log.info("persons_merged", keep=keep, gone=gone, faces=len(source.faces))
        return merged

    async def split(self, face_ids: list[str], person_id: str | None = None, name: str | None = None) -> Person:
        """Undo a merge: these faces (templates, records, device views) become a person of their own again,
        `person_id` (the merged-away id, so links to it work again) or a new one."""
        faces = [await self._face(f) for f in face_ids]
        if not faces:
            raise ValueError("no faces to split off")
        person_id = person_id or new_person_id()
        if await self.names.get(person_id) is not None:
            raise ValueError(f"{person_id} exists already")
        first = faces[0]
        # The directory makes a person only with a face's record; this face is recorded already, so only
        # the person is new (a directory whose record refuses a known face cannot split: said, not hidden).
        await self.names.record(Resolution(first.face_id, person_id, None, 1.0, new_person=True), first.thing,
                                first.crop_key, first.face_ref)
        if await self.names.get(person_id) is None:
            raise ValueError("this resolver's name directory cannot re-create a person: the merge stays")
        for face in faces:
            await self._move_face(face, person_id)
        person = await self.names.set_name(person_id, name)
        for face in faces:
            label = Resolution(face.face_id, person_id, name, 1.0, new_person=False)
            for thing in sorted(set(person.things) | {face.thing} - {""}):
                await self.shadow.update_desired(thing, face_label_patch(label))
        log.info("person_split", person_id=person_id, faces=len(faces))
        return person

    async def restore(self, face: FaceRecord, crop_jpeg: bytes, similarity: float) -> Person:
        """Undo a reject: the face (its record and crop, kept by the caller for a short while) is its person's
        again, and a template again if it was one (embedded from the crop)."""
        person = await self.names.get(face.person_id)
        if person is None:
            raise KeyError(face.person_id)
        query = FaceQuery(face.face_id, face.thing, "", "", crop_jpeg)
        crop_key = await self.crops.put(query)
        face_ref = await self.collection.index(query, face.person_id) if face.face_ref else None
        resolution = Resolution(face.face_id, face.person_id, person.name, similarity, new_person=False)
        await self.names.record(resolution, face.thing, crop_key, face_ref)
        for thing in sorted(set(person.things) | {face.thing} - {""}):
            await self.shadow.update_desired(thing, face_label_patch(resolution))
        log.info("face_restored", face_id=face.face_id, person_id=face.person_id)
        return await self.names.get(face.person_id) or person

    async def unname(self, person_id: str) -> Person:
        """Take a person's name away (undo a first naming) on the directory and every device holding them."""
        async with self._naming:
            person = await self.names.set_name(person_id, None)
        for thing in person.things:
            await self.shadow.update_desired(thing, person_label_patch(person_id, None))
        return person

    async def _face(self, face_id: str) -> FaceRecord:
        face = await self.names.face(face_id)
        if face is None:
            raise KeyError(face_id)
        return face

    async def _move_face(self, face: FaceRecord, person_id: str) -> None:
        face_ref = face.face_ref
        if face_ref:
            face_ref = await self.collection.reassign(face_ref, person_id, face.crop_key)
        await self.names.move_face(face.face_id, person_id, face_ref)

    async def enroll(self, name: str, queries: list[FaceQuery], thing: str = "") -> Enrollment:
        """Pre-register a known person from photos: they go to the person who holds `name`, or to one new
        person. A photo that is named as somebody else (by the same rule `resolve` names faces) is left out
        and reported: it is that person's, or a photo of the wrong person, never a second identity. Photos
        become templates while the person has room (templates_per_person); the rest are kept as faces."""
        name = clean_name(name)
        async with self._naming:
            holder = holder_of(await self.names.list(), name)
            person_id = holder.person_id if holder else new_person_id()
            done = Enrollment(None, templates_limit=self.templates_per_person, existing=holder is not None)
            templates = holder.templates if holder else 0
            for q in queries:
                decision = await self.identify(q)
                if decision.named and decision.person_id != person_id:
                    assert decision.person_id is not None
                    done.matched[q.face_id] = Match(decision.person_id, decision.similarity, "")
                    continue
                key = await self.crops.put(q)
                ref = await self.collection.index(q, person_id) if templates < self.templates_per_person else None
                templates += ref is not None
                done.templates_added += ref is not None
                await self.names.record(Resolution(q.face_id, person_id, None, 1.0, holder is None), thing, key, ref)
                done.added.append(q.face_id)
            if done.added:
                done.person = await self.names.get(person_id) if holder else await self.names.set_name(person_id, name)
        return done

    async def persons(self) -> list[Person]:
        return await self.names.list()
