"""The messages that cross the link between a device and the resolver, with their wire format.

Uplink (device → resolver), topic `facewatchd/<thing>/faces/unknown`: a FaceQuery as JSON. The crop is
a JPEG of the face with a margin (never a full frame), base64; the embedding is the device's SFace
vector, base64 of 128 little-endian float32.

Answer (resolver → device): the device shadow's desired state, see `face_label_patch` and
`person_label_patch`. The device applies a label, reports it and clears it, so the shadow stays
bounded (AWS caps shadow state at 8 KB).
"""

from __future__ import annotations

import base64
import math
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_CROP_BYTES = 80 * 1024  # base64 (4/3) plus the rest stays under AWS IoT's 128 KB payload limit
EMBEDDING_DIM = 128
MAX_OTHERS = 64  # co-visible faces listed in one query
MAX_TS = 1e10  # seconds since 1970: the year 2286
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class MessageError(ValueError):
    """A message that does not follow the schema; the text says which field and why."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str | bytes) -> Any:
    """json.loads without NaN and Infinity, which Python accepts and writes back out, and no other JSON
    reader does (AWS answers 400): a message that holds them is malformed."""
    return json.loads(text, parse_constant=_no_constant)


def json_object(payload: Any) -> dict[str, Any]:
    """A payload (bytes or str) that must hold a JSON object; raises MessageError."""
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = payload.decode()
        except UnicodeDecodeError:
            raise MessageError("payload is not UTF-8") from None
    if not isinstance(payload, str):
        raise MessageError(f"unexpected payload type {type(payload).__name__}")
    try:
        body = strict_json(payload)
    except ValueError as e:
        raise MessageError(f"not JSON: {e}") from None
    except RecursionError:  # "[[[[…": json recurses per level; no message of ours nests deeply
        raise MessageError("not JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise MessageError("expected a JSON object")
    return body


def new_face_id() -> str:
    return str(uuid.uuid4())


def uplink_topic(thing: str) -> str:
    return f"facewatchd/{thing}/faces/unknown"


def thing_from_uplink_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "facewatchd" or parts[2:] != ["faces", "unknown"] or not _ID.match(parts[1]):
        raise MessageError(f"not an uplink topic: {topic!r}")
    return parts[1]


@dataclass(frozen=True, slots=True)
class FaceQuery:
    """An unknown face sent once to the resolver."""

    face_id: str
    thing: str
    camera: str
    track: str
    crop_jpeg: bytes
    embedding: np.ndarray | None = None
    ts: float = 0.0
    # Faces seen in the same frame as this one are other people: the resolver never names this face
    # as any of them (two people side by side must not become one person, however alike they look).
    other_faces: tuple[str, ...] = ()
    other_persons: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "v": 1,
            "face_id": self.face_id,
            "thing": self.thing,
            "camera": self.camera,
            "track": self.track,
            "ts": self.ts,
            "crop": base64.b64encode(self.crop_jpeg).decode(),
        }
        if self.other_faces:
            body["other_faces"] = list(self.other_faces[:MAX_OTHERS])
        if self.other_persons:
            body["other_persons"] = list(self.other_persons[:MAX_OTHERS])
        if self.embedding is not None:
            body["embedding"] = base64.b64encode(np.asarray(self.embedding, "<f4").tobytes()).decode()
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes | str, thing: str | None = None) -> "FaceQuery":
        """Parse and validate. `thing`, when given, comes from the topic and wins over the payload's."""
        try:
            body = strict_json(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise MessageError(f"not JSON: {e}") from None
        except RecursionError:
            raise MessageError("not JSON: nested too deeply") from None
        if not isinstance(body, dict):
            raise MessageError("expected a JSON object")
        face_id = body.get("face_id")
        try:
            uuid.UUID(str(face_id))
        except ValueError:
            raise MessageError(f"face_id: must be a uuid, got {face_id!r}") from None
        for key in ("camera", "track"):
            if not isinstance(body.get(key), str) or not _ID.match(body[key]):
                raise MessageError(f"{key}: must be an id string, got {body.get(key)!r}")
        thing = thing or body.get("thing")
        if not isinstance(thing, str) or not _ID.match(thing):
            raise MessageError(f"thing: must be an id string, got {thing!r}")
        try:
            crop = base64.b64decode(body.get("crop", ""), validate=True)
        except (ValueError, TypeError):
            raise MessageError("crop: not base64") from None
        if not crop.startswith(b"\xff\xd8"):
            raise MessageError("crop: not a JPEG")
        if len(crop) > MAX_CROP_BYTES:
            raise MessageError(f"crop: {len(crop)} bytes, more than {MAX_CROP_BYTES}")
        embedding = None
        if body.get("embedding") is not None:
            try:
                raw = base64.b64decode(body["embedding"], validate=True)
            except (ValueError, TypeError):
                raise MessageError("embedding: not base64") from None
            if len(raw) != EMBEDDING_DIM * 4:
                raise MessageError(f"embedding: expected {EMBEDDING_DIM} float32, got {len(raw)} bytes")
            embedding = np.frombuffer(raw, "<f4").astype(np.float32)
            if not np.all(np.isfinite(embedding)):
                raise MessageError("embedding: not finite")
        ts = body.get("ts", 0.0)
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 <= ts < MAX_TS:
            raise MessageError(f"ts: must be a time in seconds since 1970, got {ts!r}")  # NaN fails the range
        others = {}
        for key in ("other_faces", "other_persons"):
            value = body.get(key, [])
            if not (isinstance(value, list) and len(value) <= MAX_OTHERS
                    and all(isinstance(v, str) and _ID.match(v) for v in value)):
                raise MessageError(f"{key}: must be a list of at most {MAX_OTHERS} ids")
            others[key] = tuple(value)
        return cls(str(face_id), thing, body["camera"], body["track"], crop, embedding, float(ts), **others)


def face_id_of(payload: object) -> str:
    """Only the face id of an uplink payload that may be broken otherwise (to answer it with a refusal)."""
    body = json_object(payload)
    face_id = body.get("face_id")
    try:
        return str(uuid.UUID(str(face_id)))
    except ValueError:
        raise MessageError(f"face_id: must be a uuid, got {face_id!r}") from None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The resolver's answer for one face."""

    face_id: str
    person_id: str
    name: str | None
    similarity: float  # to the matched face; 1.0 for a newly indexed person
    new_person: bool
    possibly: str | None = None  # a new person in the uncertain band: the person it may be, for review


def clamp_similarity(value: object) -> float:
    """A cosine similarity that crossed a boundary (a shadow, a message), as a number in [-1, 1]; anything
    else (not a number, NaN, infinite) is 0: no evidence. A similarity never grows past what a cosine can be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return max(-1.0, min(1.0, float(value)))


def face_label_patch(r: Resolution) -> dict[str, Any]:
    """Desired-state patch that names one face on the device. A shadow cannot hold null (null deletes
    a key), so a person with no name yet has no `name` key."""
    label: dict[str, Any] = {"person_id": r.person_id, "similarity": round(clamp_similarity(r.similarity), 4),
                             "reject": None}
    label["name"] = r.name  # None deletes a stale name (a moved face's earlier answer)
    return {"faces": {r.face_id: label}}


def face_unresolvable_patch(face_id: str, reason: str) -> dict[str, Any]:
    """Desired-state patch that answers a face the resolver can never resolve (no face in the crop, an
    unreadable or oversized image): the device drops the request instead of resending it forever."""
    return {"faces": {face_id: {"unresolvable": reason[:200]}}}


def face_reject_patch(face_id: str) -> dict[str, Any]:
    """Desired-state patch that takes one face away from its person on the device ("not this person"):
    the view sent under that face id, and every view learnt from it, are dropped."""
    # nulls delete an earlier answer for the face that no device has cleared yet
    return {"faces": {face_id: {"reject": True, "person_id": None, "name": None, "similarity": None}}}


def person_merge_patch(gone: str, keep: str, name: str | None) -> dict[str, Any]:
    """Desired-state patch that merges person `gone` into `keep` on the device: its views become keep's."""
    change: dict[str, Any] = {"merge_into": keep, "name": name, "forget": None}
    return {"persons": {gone: change}}


def person_label_patch(person_id: str, name: str | None, forget: bool = False) -> dict[str, Any]:
    """Desired-state patch that renames (or, with forget, removes) a person on every device holding them."""
    # Each patch also deletes (null) the other key, so a label after a forget (or the reverse) that
    # lands before the device cleared the first one is not misread.
    return {"persons": {person_id: {"forget": True, "name": None} if forget else {"name": name, "forget": None}}}
