"""The resolver core: the seed design's flow with no I/O of its own.

store the crop → search the collection → index as a new person if nothing matches → look up the
name → answer through the shadow. Idempotent by face id, so a redelivered message changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog

from facewatchd.messages import FaceQuery, Resolution, face_label_patch, person_label_patch
from facewatchd.resolver.ports import CropStore, FaceCollection, NameDirectory, Person, ShadowPort

log = structlog.get_logger("facewatchd.resolver")


def new_person_id() -> str:
    return f"person-{uuid.uuid4().hex[:10]}"


@dataclass
class ResolverStats:
    requests: int = 0
    duplicates: int = 0
    searches: int = 0
    indexed: int = 0


class Resolver:
    def __init__(self, crops: CropStore, collection: FaceCollection, names: NameDirectory, shadow: ShadowPort,
                 match_threshold: float) -> None:
        self.crops = crops
        self.collection = collection
        self.names = names
        self.shadow = shadow
        self.match_threshold = match_threshold
        self.stats = ResolverStats()

    async def resolve(self, query: FaceQuery) -> Resolution:
        self.stats.requests += 1
        done = await self.names.handled(query.face_id)
        if done is not None:
            # Redelivery: answer again (the device may have missed it), change nothing.
            self.stats.duplicates += 1
            await self.shadow.update_desired(query.thing, face_label_patch(done))
            return done
        crop_key = await self.crops.put(query)
        self.stats.searches += 1
        exclude = await self._other_persons(query)
        match = (await self.collection.search(query, self.match_threshold, exclude) if exclude
                 else await self.collection.search(query, self.match_threshold))
        face_ref: str | None
        if match is None:
            person_id = new_person_id()
            face_ref = await self.collection.index(query, person_id)
            self.stats.indexed += 1
            resolution = Resolution(query.face_id, person_id, None, 1.0, new_person=True)
        else:
            person = await self.names.get(match.person_id)
            face_ref = None
            resolution = Resolution(query.face_id, match.person_id, person.name if person else None,
                                    match.similarity, new_person=person is None)
        await self.names.record(resolution, query.thing, crop_key, face_ref)
        # A concurrent duplicate may have recorded first (the write is conditional): answer what was kept.
        resolution = await self.names.handled(query.face_id) or resolution
        await self.shadow.update_desired(query.thing, face_label_patch(resolution))
        log.info("face_resolved", face_id=query.face_id, thing=query.thing, camera=query.camera,
                 track_id=query.track, person_id=resolution.person_id, name=resolution.name,
                 similarity=round(resolution.similarity, 3), new_person=resolution.new_person)
        return resolution

    async def _other_persons(self, query: FaceQuery) -> frozenset[str]:
        """Persons this face cannot be: those of faces seen in the same frame."""
        persons = set(query.other_persons)
        for face_id in query.other_faces:
            done = await self.names.handled(face_id)
            if done is not None:
                persons.add(done.person_id)
        return frozenset(persons)

    async def label(self, person_id: str, name: str) -> Person:
        """Name a person and push the name to every device that holds them."""
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

    async def enroll(self, name: str, queries: list[FaceQuery], thing: str = "") -> Person:
        """Pre-register a known person from photos: all faces go under one new person id."""
        person_id = new_person_id()
        for q in queries:
            key = await self.crops.put(q)
            ref = await self.collection.index(q, person_id)
            await self.names.record(Resolution(q.face_id, person_id, None, 1.0, True), thing, key, ref)
        return await self.names.set_name(person_id, name)

    async def persons(self) -> list[Person]:
        return await self.names.list()
