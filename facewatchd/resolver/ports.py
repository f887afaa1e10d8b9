"""The resolver core's ports: what it needs from storage, the face collection, names and the shadow.

Adapters: resolver/local.py (files + SQLite + SFace) and resolver/aws.py (S3, Rekognition, DynamoDB,
IoT shadow). Every method is async and idempotent where the docstring says so, because messages are
delivered at least once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

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


class NoFaceError(ValueError):
    """The crop holds no usable face: a poison message, never retried."""


class CropStore(Protocol):
    async def put(self, query: FaceQuery) -> str:
        """Store the crop under a key derived from the face id; idempotent. Returns the key."""

    async def delete(self, keys: list[str]) -> None:
        """Delete stored crops (forget)."""


class FaceCollection(Protocol):
    async def search(self, query: FaceQuery, threshold: float, exclude: frozenset[str] = frozenset()) -> Match | None:
        """The best match at or above `threshold` whose person is not in `exclude`, or None.
        Raises NoFaceError if the crop has no face."""

    async def index(self, query: FaceQuery, person_id: str) -> str:
        """Add the face to the collection under `person_id`; returns the collection's face ref."""

    async def delete_person(self, person_id: str) -> int:
        """Remove every face of a person; returns how many."""


class NameDirectory(Protocol):
    async def handled(self, face_id: str) -> Resolution | None:
        """The answer already given for this face id, if any (idempotency)."""

    async def record(self, resolution: Resolution, thing: str, crop_key: str, face_ref: str | None) -> None:
        """Remember the answer for the face id and link the face to its person (creating the person if
        new); conditional: recording the same face id twice changes nothing."""

    async def get(self, person_id: str) -> Person | None: ...

    async def list(self) -> list[Person]: ...

    async def set_name(self, person_id: str, name: str | None) -> Person:
        """Rename; raises KeyError for an unknown person."""

    async def forget(self, person_id: str) -> list[str]:
        """Delete the person and their face records; returns their crop keys."""


class ShadowPort(Protocol):
    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        """Merge a patch into the thing's desired shadow state (AWS semantics; None deletes a key)."""
