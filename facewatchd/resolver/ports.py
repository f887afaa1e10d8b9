"""The resolver core's ports: what it needs from storage, the face collection, names and the shadow.

Adapters: resolver/local.py (files + SQLite + SFace) and resolver/aws/ (S3, Rekognition, DynamoDB,
IoT shadow: a module each). Every method is async and idempotent where the docstring says so, because
messages are delivered at least once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from facewatchd.messages import FaceQuery, Resolution


@dataclass(frozen=True, slots=True)
class Match:
    person_id: str
    similarity: float  # cosine in [-1, 1] locally; Rekognition's 0-100 similarity / 100 on AWS
    face_ref: str  # the collection's id of the matched face


@dataclass(slots=True)
class Person:
    person_id: str
    name: str | None
    faces: list[str] = field(default_factory=list)  # face ids handled for this person
    things: list[str] = field(default_factory=list)  # devices that hold this person
    first_seen: float = 0.0
    last_seen: float = 0.0
    templates: int = 0  # faces of this person in the collection
    possibly: str | None = None  # made from the uncertain band: the person it may be, for review
    reviewed: bool = False  # dismissed on the review page
    sightings: int = 0  # faces a device sent (enrolment photos are not sightings)
    tracks: int | None = None  # distinct tracks among them; None when no record says its track (older ones)
    last_seen_on: dict[str, float] = field(default_factory=dict)  # "thing/camera" → the last sighting there
    crop_key: str | None = None  # the latest face's crop in the crop store


def sightings_of(faces: Iterable[tuple[str, str, str, float]]) -> tuple[int, int | None, dict[str, float]]:
    """From a person's face records (thing, camera, track, ts): how many came from devices, in how many
    distinct tracks (None when no record says its track), and the last sighting on each thing/camera."""
    seen = [(thing, camera, track, ts) for thing, camera, track, ts in faces if thing]
    tracks = {(thing, camera, track) for thing, camera, track, _ in seen if track}
    last: dict[str, float] = {}
    for thing, camera, _, ts in seen:
        key = f"{thing}/{camera}" if camera else thing
        last[key] = max(ts, last.get(key, ts))
    return len(seen), len(tracks) if tracks else None, last


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """One handled face: whose it is, where its crop is, and its template in the collection (if any)."""

    face_id: str
    person_id: str
    thing: str
    crop_key: str
    face_ref: str | None


class NoFaceError(ValueError):
    """The crop holds no usable face: a poison message, never retried."""


class NameTaken(ValueError):
    """One name, one person: the name is already `holder`'s, so the person it was meant for is a split of
    `holder` to merge into it, not a second person of that name."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder

    @classmethod
    def of(cls, name: str, holder: str, person_id: str) -> "NameTaken":
        return cls(f"{name!r} is already {holder}: merge {person_id} into it instead "
                   f"(facewatchd faces merge {holder} {person_id})", holder)


@dataclass(slots=True)
class Enrollment:
    """What an enrolment did: the person the photos went to (None when none went), the faces added, those
    left out because they are another person's, and how many became templates under the person's limit."""

    person: Person | None
    added: list[str] = field(default_factory=list)  # face ids
    matched: dict[str, Match] = field(default_factory=dict)  # face id → the other person it is
    templates_added: int = 0
    templates_limit: int = 0
    existing: bool = False  # the photos went to the person who already held the name


class CropStore(Protocol):
    async def put(self, query: FaceQuery) -> str:
        """Store the crop under a key derived from the face id; idempotent. Returns the key."""

    async def delete(self, keys: list[str]) -> None:
        """Delete stored crops (forget)."""

    async def read(self, key: str) -> bytes:
        """A stored crop (the review page shows it; a moved face is indexed again from it)."""


class FaceCollection(Protocol):
    async def search(self, query: FaceQuery, threshold: float, exclude: frozenset[str] = frozenset()) -> Match | None:
        """The best match at or above `threshold` whose person is not in `exclude`, or None.
        Raises NoFaceError if the crop has no face."""

    async def index(self, query: FaceQuery, person_id: str) -> str:
        """Add the face to the collection under `person_id`; returns the collection's face ref."""

    async def delete_person(self, person_id: str) -> int:
        """Remove every face of a person; returns how many."""

    async def delete_faces(self, face_refs: list[str]) -> None:
        """Remove these faces from the collection (a rejected face)."""

    async def reassign(self, face_ref: str, person_id: str, crop_key: str) -> str:
        """Make a face in the collection another person's (a moved face); returns its face ref then
        (a collection that cannot relabel re-indexes the stored crop under a new ref)."""

    async def count_templates(self) -> int:
        """How many faces a search compares against: each is one more chance of a false match, so the
        naming threshold rises with it."""


class NameDirectory(Protocol):
    async def handled(self, face_id: str) -> Resolution | None:
        """The answer already given for this face id, if any (idempotency)."""

    async def record(self, resolution: Resolution, thing: str, crop_key: str, face_ref: str | None,
                     camera: str = "", track: str = "") -> None:
        """Remember the answer for the face id and link the face to its person (creating the person if
        new), with the camera and track it came from; conditional: recording the same face id twice
        changes nothing."""

    async def get(self, person_id: str) -> Person | None: ...

    async def list(self) -> list[Person]: ...

    async def set_name(self, person_id: str, name: str | None) -> Person:
        """Rename; raises KeyError for an unknown person."""

    async def forget(self, person_id: str) -> list[str]:
        """Delete the person and their face records; returns their crop keys."""

    async def face(self, face_id: str) -> FaceRecord | None: ...

    async def move_face(self, face_id: str, person_id: str, face_ref: str | None) -> None:
        """The face is now `person_id`'s (an existing person), with this collection ref."""

    async def remove_face(self, face_id: str) -> None:
        """Forget one face's record (a rejected face); its person stays."""

    async def page(self, offset: int, limit: int, unnamed_only: bool = False) -> tuple[list[Person], int]:
        """Persons newest sighting first (only unnamed, not dismissed ones with `unnamed_only`), and the total."""

    async def set_reviewed(self, person_id: str) -> None:
        """Dismissed on the review page: an unknown person nobody needs to name."""

    async def seen(self, person_id: str, ts: float) -> None:
        """A face of the person was named without the resolver (by a device's own cache) at `ts`: their
        last sighting becomes at least `ts`. An unknown person is ignored."""


class ShadowPort(Protocol):
    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        """Merge a patch into the thing's desired shadow state (AWS semantics; None deletes a key)."""
