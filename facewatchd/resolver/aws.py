"""AWS adapters for the resolver ports: crops in S3, the face collection in Rekognition, names in
DynamoDB, answers through the IoT device shadow. aioboto3 end to end, so nothing blocks the loop.

Retries: botocore's standard mode (exponential backoff with full jitter) covers throttling and
transient errors on every call; on top of that we retry what botocore cannot know is safe to retry:
shadow version conflicts and DynamoDB transaction conflicts.

The DynamoDB table (one table, pk/sk strings, TTL on `expires_at`) holds three item types:

    pk=PERSON#<person_id>  sk=PROFILE        name, labelled, things, first_seen, last_seen
    pk=PERSON#<person_id>  sk=FACE#<face_id> thing, crop_key, face_ref, similarity, ts
    pk=FACE#<face_id>      sk=FACE           person_id, similarity, new_person (the idempotency record)
    pk=ORPHANS             sk=FACE#<face_ref> person_id, first_seen (a collection face without a person,
                                             found by deploy/lambda/cleanup.py and deleted at its next run)

A person's face ids are the FACE# items of its partition (not a list on the profile), so a person
seen a million times never hits DynamoDB's 400 KB item limit. `record` writes the three items in one
TransactWriteItems, guarded by attribute_not_exists on the idempotency record.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.parse
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from facewatchd.identity import IdentityConfig
from facewatchd.messages import FaceQuery, Resolution
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.ports import FaceRecord, Match, NoFaceError, Person, sightings_of

# The SDK (0.6 s to import) is imported when the adapters open, so config.py can import this module
# for AwsResolverConfig quickly, and without the aws extra installed at all.
try:
    from botocore.exceptions import ClientError
except ImportError:
    class ClientError(Exception):  # type: ignore[no-redef]
        """Stand-in: without botocore no client exists, so this is never raised."""

        response: dict[str, Any] = {}

if TYPE_CHECKING:
    import aioboto3
    from aiobotocore.config import AioConfig

DAY_S = 86_400
PROFILE = "PROFILE"
ORPHANS = "ORPHANS"  # the partition of collection faces found without a person (see cleanup)
# Key schema shared by the adapter, the tests and (by hand) deploy/lambda/template.yaml.
TABLE_KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
TABLE_ATTRIBUTES = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]
TTL_ATTRIBUTE = "expires_at"
# SearchFacesByImage's MaxFaces when some persons are excluded, and the service's ceiling.
EXCLUDING_MAX_FACES = 10
REKOGNITION_MAX_FACES = 4096
# Rekognition errors that mean "this crop can never be searched": a poison message, not an outage.
_IMAGE_ERRORS = {"InvalidImageFormatException", "ImageTooLargeException"}
# Rekognition's answers when the account's TPS is exceeded (botocore retries both).
THROTTLE_ERRORS = frozenset({"ThrottlingException", "ProvisionedThroughputExceededException"})


class AwsResolverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["aws"] = "aws"
    region: str = "us-east-1"
    bucket: str = Field(min_length=3, max_length=63)
    table: str = Field(min_length=3, max_length=255)
    collection_id: str = Field(pattern=r"^[a-zA-Z0-9_.\-]{1,255}$")
    face_match_threshold: float = Field(80.0, ge=0, le=100, description="Rekognition similarity (0-100) that "
                                        "names a face as a known person")
    uncertain_above: float = Field(60.0, ge=0, le=100, description="Rekognition similarity from which a face "
                                   "below face_match_threshold becomes a new person marked \"possibly X\"")
    learn_threshold: float = Field(95.0, ge=0, le=100, description="Rekognition similarity from which a named "
                                   "face is indexed as another template of its person")
    templates_per_person: int = Field(5, ge=1, le=100, description="faces kept per person in the collection")
    quality_filter: Literal["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"] = "AUTO"
    max_faces: int = Field(1, ge=1, le=4096, description="matches asked of SearchFacesByImage")
    retention_days: int = Field(30, ge=1, le=3650)
    crop_prefix: str = Field("faces", pattern=r"^[A-Za-z0-9_.\-/]{1,64}$")
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per call, the first included (botocore)")


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


async def _backoff(attempt: int, base_s: float = 0.05, cap_s: float = 2.0) -> None:
    # Full jitter: writers that collided once should not collide again in lockstep.
    await asyncio.sleep(random.uniform(0, min(cap_s, base_s * 2 ** attempt)))


class UnreadableImageError(NoFaceError):
    """Rekognition cannot read the crop at all (corrupt or oversized image): poison, like no face."""


class S3CropStore:
    def __init__(self, s3: Any, config: AwsResolverConfig) -> None:
        self._s3 = s3
        self._bucket = config.bucket
        self._prefix = config.crop_prefix.strip("/")
        self._tagging = urllib.parse.urlencode({"purpose": "face-crop", "retention-days": config.retention_days})

    def key(self, query: FaceQuery) -> str:
        day = time.strftime("%Y/%m/%d", time.gmtime(query.ts or time.time()))
        return f"{self._prefix}/{query.thing}/{day}/{query.face_id}.jpg"

    async def put(self, query: FaceQuery) -> str:
        key = self.key(query)
        # Same key, same bytes: a redelivery overwrites the object with itself.
        await self._s3.put_object(Bucket=self._bucket, Key=key, Body=query.crop_jpeg, ContentType="image/jpeg",
                                  ServerSideEncryption="AES256", Tagging=self._tagging,
                                  Metadata={"thing": query.thing, "camera": query.camera, "face-id": query.face_id})
        return key

    async def read(self, key: str) -> bytes:
        try:
            resp = await self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            raise
        async with resp["Body"] as body:
            return bytes(await body.read())

    async def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = keys[i:i + 1000]
            resp = await self._s3.delete_objects(
                Bucket=self._bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            if resp.get("Errors"):
                raise RuntimeError(f"S3 refused to delete {len(resp['Errors'])} crops: {resp['Errors'][:3]}")


class RekognitionCollection:
    """The face collection. ExternalImageId carries the person id, so a match names the person."""

    def __init__(self, rekognition: Any, config: AwsResolverConfig,
                 read_crop: Callable[[str], Awaitable[bytes]] | None = None) -> None:
        self._rek = rekognition
        self._read_crop = read_crop  # for a moved face: Rekognition cannot relabel, so it is indexed again
        self._id = config.collection_id
        self._quality = config.quality_filter
        self._max_faces = config.max_faces

    async def ensure_collection(self) -> None:
        try:
            await self._rek.create_collection(CollectionId=self._id)
        except ClientError as e:
            if _code(e) != "ResourceAlreadyExistsException":  # another cold start won the race: fine
                raise

    @staticmethod
    def _poison(e: ClientError, query: FaceQuery) -> None:
        code, message = _code(e), str(e.response.get("Error", {}).get("Message", ""))
        if code in _IMAGE_ERRORS:
            raise UnreadableImageError(f"{code}: {message} (face {query.face_id})") from None
        if code == "InvalidParameterException":
            # Every other parameter is ours and valid: the image is what Rekognition cannot use (no face in
            # it, smaller than 80x80 px). A poison, whatever the message's wording: never retried.
            raise NoFaceError(f"{code}: {message} (face {query.face_id})") from None

    async def search(self, query: FaceQuery, threshold: float, exclude: frozenset[str] = frozenset()) -> Match | None:
        """The best match whose person is not in `exclude`: the persons seen in the same frame. The
        core maps query.other_faces to their persons; the collection's FaceIds are Rekognition's, never
        our face ids, so excluding by person is what keeps two people in one frame apart."""
        if not exclude:
            return self._best(await self._matches(query, threshold, self._max_faces), exclude)
        # Excluded persons may fill the first matches: ask for more, and once for all if they did.
        max_faces = max(self._max_faces, EXCLUDING_MAX_FACES)
        matches = await self._matches(query, threshold, max_faces)
        best = self._best(matches, exclude)
        page_was_full = len(matches) >= max_faces
        if best is None and page_was_full and max_faces < REKOGNITION_MAX_FACES:
            best = self._best(await self._matches(query, threshold, REKOGNITION_MAX_FACES), exclude)
        return best

    async def _matches(self, query: FaceQuery, threshold: float, max_faces: int) -> list[dict[str, Any]]:
        try:
            resp = await self._rek.search_faces_by_image(
                CollectionId=self._id, Image={"Bytes": query.crop_jpeg}, MaxFaces=max_faces,
                FaceMatchThreshold=min(100.0, max(0.0, threshold * 100)), QualityFilter=self._quality)
        except ClientError as e:
            self._poison(e, query)
            raise
        return list(resp.get("FaceMatches", []))

    @staticmethod
    def _best(matches: list[dict[str, Any]], exclude: frozenset[str]) -> Match | None:
        # Faces indexed by something other than us carry no person id: skip them.
        allowed = [m for m in matches
                   if m.get("Face", {}).get("ExternalImageId") and m["Face"]["ExternalImageId"] not in exclude]
        if not allowed:
            return None
        best = max(allowed, key=lambda m: m["Similarity"])
        return Match(best["Face"]["ExternalImageId"], float(best["Similarity"]) / 100, best["Face"]["FaceId"])

    async def delete_faces(self, face_refs: list[str]) -> None:
        for i in range(0, len(face_refs), 4096):
            await self._rek.delete_faces(CollectionId=self._id, FaceIds=face_refs[i:i + 4096])

    async def reassign(self, face_ref: str, person_id: str, crop_key: str) -> str:
        """ExternalImageId cannot be changed: index the stored crop again under the new person, then drop
        the old face (in that order: a failure in between leaves a duplicate, never a lost face)."""
        if self._read_crop is None:
            raise RuntimeError("moving a face needs the crop store")
        jpeg = await self._read_crop(crop_key)
        ref = await self.index(FaceQuery(str(uuid.uuid4()), "", "move", "move", jpeg), person_id)
        await self.delete_faces([face_ref])
        return ref

    async def count_templates(self) -> int:
        """Not needed here: on Rekognition's scale the naming threshold is fixed (see aws_identity)."""
        return 0

    async def index(self, query: FaceQuery, person_id: str) -> str:
        try:
            resp = await self._rek.index_faces(
                CollectionId=self._id, Image={"Bytes": query.crop_jpeg}, ExternalImageId=person_id, MaxFaces=1,
                QualityFilter=self._quality, DetectionAttributes=["DEFAULT"])
        except ClientError as e:
            self._poison(e, query)
            raise
        records = resp.get("FaceRecords", [])
        if not records:
            reasons = [r for u in resp.get("UnindexedFaces", []) for r in u.get("Reasons", [])]
            raise NoFaceError(f"IndexFaces indexed no face of {query.face_id} ({', '.join(reasons) or 'no face'})")
        return str(records[0]["Face"]["FaceId"])

    async def faces_by_person(self) -> dict[str, list[str]]:
        """Every face of the collection by its person id (faces indexed without one are not ours: left out)."""
        faces: dict[str, list[str]] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"CollectionId": self._id, "MaxResults": 4096}
            if token:
                kwargs["NextToken"] = token
            resp = await self._rek.list_faces(**kwargs)
            for face in resp.get("Faces", []):
                if face.get("ExternalImageId"):
                    faces.setdefault(face["ExternalImageId"], []).append(face["FaceId"])
            token = resp.get("NextToken")
            if not token:
                return faces

    async def delete_person(self, person_id: str) -> int:
        # ListFaces over the collection, not the face refs we recorded: it also finds faces indexed
        # by an attempt whose DynamoDB write then failed.
        face_ids = (await self.faces_by_person()).get(person_id, [])
        deleted = 0
        for i in range(0, len(face_ids), 4096):
            resp = await self._rek.delete_faces(CollectionId=self._id, FaceIds=face_ids[i:i + 4096])
            deleted += len(resp.get("DeletedFaces", []))
        return deleted


def _person_pk(person_id: str) -> str:
    return f"PERSON#{person_id}"


def _face_pk(face_id: str) -> str:
    return f"FACE#{face_id}"


class DynamoNameDirectory:
    def __init__(self, dynamodb: Any, config: AwsResolverConfig, max_conflicts: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self._ddb = dynamodb
        self._clock = clock  # a sighting's time (last_seen, TTL): a fake one in tests
        self._table = config.table
        self._retention_s = config.retention_days * DAY_S
        self._max_conflicts = max_conflicts
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._ser = TypeSerializer()
        self._de = TypeDeserializer()

    def _item(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._ser.serialize(_ddb_value(v)) for k, v in values.items() if v is not None}

    def _plain(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: self._de.deserialize(v) for k, v in item.items()}

    async def handled(self, face_id: str) -> Resolution | None:
        resp = await self._ddb.get_item(TableName=self._table, Key=self._item({"pk": _face_pk(face_id), "sk": "FACE"}),
                                        ConsistentRead=True)
        if "Item" not in resp:
            return None
        rec = self._plain(resp["Item"])
        profile = await self._ddb.get_item(
            TableName=self._table, Key=self._item({"pk": _person_pk(rec["person_id"]), "sk": PROFILE}),
            ProjectionExpression="#n", ExpressionAttributeNames={"#n": "name"}, ConsistentRead=True)
        name = self._plain(profile.get("Item", {})).get("name")  # the current name, not the one first answered
        return Resolution(face_id, rec["person_id"], name, float(rec["similarity"]), bool(rec["new_person"]))

    async def record(self, resolution: Resolution, thing: str, crop_key: str, face_ref: str | None,
                     camera: str = "", track: str = "") -> None:
        now = self._clock()
        expires = int(now + self._retention_s)
        r = resolution
        marker = {"pk": _face_pk(r.face_id), "sk": "FACE", "face_id": r.face_id, "person_id": r.person_id,
                  "similarity": r.similarity, "new_person": r.new_person, "expires_at": expires}
        face = {"pk": _person_pk(r.person_id), "sk": f"FACE#{r.face_id}", "face_id": r.face_id, "thing": thing,
                "crop_key": crop_key, "face_ref": face_ref, "similarity": r.similarity, "ts": now,
                "camera": camera or None, "track": track or None, "expires_at": expires}
        items = [
            {"Put": {"TableName": self._table, "Item": self._item(marker),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self._table, "Item": self._item(face)}},
            {"Update": {
                "TableName": self._table, "Key": self._item({"pk": _person_pk(r.person_id), "sk": PROFILE}),
                # No TTL on the profile: a named person is kept for good, an unnamed one is forgotten by the
                # scheduled cleanup from its last sighting (deploy/lambda/cleanup.py), never by its first.
                "UpdateExpression": "SET person_id = :p, first_seen = if_not_exists(first_seen, :now), "
                                    "last_seen = :now, labelled = if_not_exists(labelled, :f)"
                                    + (", possibly = if_not_exists(possibly, :maybe)" if r.possibly else "")
                                    + (" ADD things :things" if thing else ""),
                "ExpressionAttributeValues": self._item({":p": r.person_id, ":now": now, ":f": False,
                                                         ":things": {thing} if thing else None,
                                                         ":maybe": r.possibly}),
            }},
        ]
        for attempt in range(self._max_conflicts):
            try:
                await self._ddb.transact_write_items(TransactItems=items)
                return
            except ClientError as e:
                if _code(e) != "TransactionCanceledException":
                    raise
                reasons = [c.get("Code") for c in e.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return  # already recorded (redelivery, or a retried call that had in fact succeeded)
                if "TransactionConflict" not in reasons:
                    raise
            await _backoff(attempt)
        raise RuntimeError(f"face {r.face_id}: DynamoDB transaction conflicting {self._max_conflicts} times")

    async def _partition(self, person_id: str) -> list[dict[str, Any]]:
        return await self._partition_items(_person_pk(person_id))

    async def _partition_items(self, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self._table, "KeyConditionExpression": "pk = :pk",
                                  "ExpressionAttributeValues": self._item({":pk": pk}), "ConsistentRead": True}
        while True:
            resp = await self._ddb.query(**kwargs)
            items += [self._plain(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    @staticmethod
    def _person(items: list[dict[str, Any]]) -> Person | None:
        profile = next((i for i in items if i["sk"] == PROFILE), None)
        if profile is None:
            return None
        faces = sorted((i for i in items if i["sk"].startswith("FACE#")), key=lambda i: float(i.get("ts", 0)))
        things = sorted(profile.get("things", set()))
        seen = sightings_of((f.get("thing", ""), f.get("camera", ""), f.get("track", ""), float(f.get("ts", 0)))
                            for f in faces)
        return Person(profile["person_id"], profile.get("name"), [f["face_id"] for f in faces], things,
                      float(profile.get("first_seen", 0)), float(profile.get("last_seen", 0)),
                      sum(1 for f in faces if f.get("face_ref")), profile.get("possibly"), bool(profile.get("reviewed")),
                      *seen, faces[-1].get("crop_key") if faces else None)

    async def get(self, person_id: str) -> Person | None:
        return self._person(await self._partition(person_id))

    async def list(self) -> list[Person]:
        # One scan, grouped by partition: an operator action, not a hot path.
        partitions: dict[str, list[dict[str, Any]]] = {}
        kwargs: dict[str, Any] = {"TableName": self._table}
        while True:
            resp = await self._ddb.scan(**kwargs)
            for raw in resp.get("Items", []):
                item = self._plain(raw)
                if item["pk"].startswith("PERSON#"):
                    partitions.setdefault(item["pk"], []).append(item)
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        persons = [p for p in map(self._person, partitions.values()) if p]
        return sorted(persons, key=lambda p: p.first_seen)

    async def set_name(self, person_id: str, name: str | None) -> Person:
        # REMOVE expires_at: profiles written before profiles stopped expiring lose their TTL when named
        update = "SET #n = :n, labelled = :t REMOVE expires_at" if name is not None else "REMOVE #n SET labelled = :f"
        values = {":n": name, ":t": True} if name is not None else {":f": False}
        try:
            await self._ddb.update_item(
                TableName=self._table, Key=self._item({"pk": _person_pk(person_id), "sk": PROFILE}),
                UpdateExpression=update, ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#n": "name"}, ExpressionAttributeValues=self._item(values))
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                raise KeyError(person_id) from None
            raise
        person = await self.get(person_id)
        if person is None:  # forgotten between the two calls
            raise KeyError(person_id)
        return person

    async def forget(self, person_id: str) -> list[str]:
        items = await self._partition(person_id)
        faces = [i for i in items if i["sk"].startswith("FACE#")]
        keys = [{"pk": _face_pk(f["face_id"]), "sk": "FACE"} for f in faces]
        keys += [{"pk": f["pk"], "sk": f["sk"]} for f in faces]
        await self._delete(keys)
        # The profile goes last: if anything above fails, get() still finds the person and forget can be rerun.
        await self._delete([{"pk": _person_pk(person_id), "sk": PROFILE}])
        return [f["crop_key"] for f in faces if f.get("crop_key")]

    async def page(self, offset: int, limit: int, unnamed_only: bool = False) -> tuple[list[Person], int]:
        """One scan, sorted here: the review tool of a cloud deployment, not a hot path."""
        persons = [p for p in await self.list() if not unnamed_only or (p.name is None and not p.reviewed)]
        persons.sort(key=lambda p: p.last_seen, reverse=True)
        return persons[offset:offset + limit], len(persons)

    async def set_reviewed(self, person_id: str) -> None:
        try:
            await self._ddb.update_item(
                TableName=self._table, Key=self._item({"pk": _person_pk(person_id), "sk": PROFILE}),
                UpdateExpression="SET reviewed = :t", ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=self._item({":t": True}))
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                raise KeyError(person_id) from None
            raise

    async def seen(self, person_id: str, ts: float) -> None:
        # last_seen only: the profile has no TTL, the scheduled cleanup forgets unnamed persons from it
        try:
            await self._ddb.update_item(
                TableName=self._table, Key=self._item({"pk": _person_pk(person_id), "sk": PROFILE}),
                UpdateExpression="SET last_seen = :ts",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(last_seen) OR last_seen < :ts)",
                ExpressionAttributeValues=self._item({":ts": ts}))
        except ClientError as e:
            if _code(e) != "ConditionalCheckFailedException":  # unknown, or seen later already: nothing to do
                raise

    async def face(self, face_id: str) -> FaceRecord | None:
        resp = await self._ddb.get_item(TableName=self._table, Key=self._item({"pk": _face_pk(face_id), "sk": "FACE"}),
                                        ConsistentRead=True)
        if "Item" not in resp:
            return None
        person_id = self._plain(resp["Item"])["person_id"]
        item = await self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                        Key=self._item({"pk": _person_pk(person_id), "sk": f"FACE#{face_id}"}))
        face = self._plain(item.get("Item", {}))
        return FaceRecord(face_id, person_id, face.get("thing", ""), face.get("crop_key", ""), face.get("face_ref"))

    async def move_face(self, face_id: str, person_id: str, face_ref: str | None) -> None:
        """One transaction: the face leaves its person's partition, joins the new one (which must exist),
        and its marker points there; the new person now holds the face's device too."""
        old = await self.face(face_id)
        if old is None:
            raise KeyError(face_id)
        item = await self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                        Key=self._item({"pk": _person_pk(old.person_id), "sk": f"FACE#{face_id}"}))
        face = {**self._plain(item.get("Item", {})), "pk": _person_pk(person_id), "sk": f"FACE#{face_id}",
                "face_ref": face_ref, "face_id": face_id}
        items: list[dict[str, Any]] = [
            {"Delete": {"TableName": self._table,
                        "Key": self._item({"pk": _person_pk(old.person_id), "sk": f"FACE#{face_id}"})}},
            {"Put": {"TableName": self._table, "Item": self._item(face)}},
            {"Update": {"TableName": self._table, "Key": self._item({"pk": _face_pk(face_id), "sk": "FACE"}),
                        "UpdateExpression": "SET person_id = :p, new_person = :f",
                        "ExpressionAttributeValues": self._item({":p": person_id, ":f": False})}},
            {"Update": {"TableName": self._table, "Key": self._item({"pk": _person_pk(person_id), "sk": PROFILE}),
                        "ConditionExpression": "attribute_exists(pk)",
                        "UpdateExpression": "SET last_seen = :now" + (" ADD things :things" if old.thing else ""),
                        "ExpressionAttributeValues": self._item({":now": self._clock(),
                                                                 ":things": {old.thing} if old.thing else None})}},
        ]
        try:
            await self._ddb.transact_write_items(TransactItems=items)
        except ClientError as e:
            reasons = [c.get("Code") for c in e.response.get("CancellationReasons", [])]
            if _code(e) == "TransactionCanceledException" and "ConditionalCheckFailed" in reasons:
                raise KeyError(person_id) from None
            raise

    async def remove_face(self, face_id: str) -> None:
        old = await self.face(face_id)
        if old is not None:
            await self._delete([{"pk": _face_pk(face_id), "sk": "FACE"},
                                {"pk": _person_pk(old.person_id), "sk": f"FACE#{face_id}"}])

    # -- faces whose person expired (cleanup) ----------------------------------------------------
    async def orphan_marks(self) -> dict[str, float]:
        """Collection faces found without a person by an earlier cleanup: face ref → when first found."""
        items = await self._partition_items(ORPHANS)
        return {i["sk"].removeprefix("FACE#"): float(i["first_seen"]) for i in items}

    async def mark_orphans(self, face_refs: dict[str, str], now: float) -> None:
        """Remember faces (ref → person id) found without a person, so a later cleanup can tell a face whose
        person expired from one whose person is being recorded right now."""
        items = [{"pk": ORPHANS, "sk": f"FACE#{ref}", "person_id": person_id, "first_seen": now,
                  "expires_at": int(now + self._retention_s)} for ref, person_id in face_refs.items()]
        await self._write([{"PutRequest": {"Item": self._item(i)}} for i in items])

    async def unmark_orphans(self, face_refs: list[str]) -> None:
        await self._delete([{"pk": ORPHANS, "sk": f"FACE#{ref}"} for ref in face_refs])

    async def _delete(self, keys: list[dict[str, str]]) -> None:
        await self._write([{"DeleteRequest": {"Key": self._item(k)}} for k in keys])

    async def _write(self, requests: list[dict[str, Any]]) -> None:
        for i in range(0, len(requests), 25):  # BatchWriteItem takes at most 25 requests
            pending = {self._table: requests[i:i + 25]}
            for attempt in range(self._max_conflicts + 3):
                resp = await self._ddb.batch_write_item(RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}
                if not pending:
                    break
                await _backoff(attempt)
            if pending:
                raise RuntimeError(f"DynamoDB left {len(pending[self._table])} writes unprocessed")


def _ddb_value(v: Any) -> Any:
    # DynamoDB has no float type: numbers go as Decimal, via str so 0.1 stays 0.1.
    if isinstance(v, float):
        return Decimal(repr(v))
    return v


class ShadowConflictError(RuntimeError):
    """The shadow kept changing under us; the message is retried later."""


class IotShadow:
    """ShadowPort over the IoT data plane, with optimistic versioning."""

    def __init__(self, iot_data: Any, max_conflicts: int = 8) -> None:
        self._iot = iot_data
        self._max_conflicts = max_conflicts

    async def _version(self, thing: str) -> int | None:
        try:
            resp = await self._iot.get_thing_shadow(thingName=thing)
        except ClientError as e:
            if _code(e) == "ResourceNotFoundException":
                return None  # no shadow yet: the first update creates it
            raise
        async with resp["payload"] as stream:
            return int(json.loads(await stream.read())["version"])

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        for attempt in range(self._max_conflicts):
            body: dict[str, Any] = {"state": {"desired": desired}}
            version = await self._version(thing)
            if version is not None:
                body["version"] = version
            try:
                await self._iot.update_thing_shadow(thingName=thing, payload=json.dumps(body).encode())
                return
            except ClientError as e:
                if _code(e) != "ConflictException":
                    raise
            await _backoff(attempt)
        raise ShadowConflictError(f"shadow of {thing}: version conflict {self._max_conflicts} times")


@dataclass(frozen=True, slots=True)
class AwsAdapters:
    crops: S3CropStore
    collection: RekognitionCollection
    names: DynamoNameDirectory
    shadow: IotShadow

    def resolver(self, config: AwsResolverConfig) -> Resolver:
        return Resolver(self.crops, self.collection, self.names, self.shadow, aws_identity(config),
                        config.templates_per_person)


def aws_identity(config: AwsResolverConfig) -> IdentityConfig:
    """The identity rule on Rekognition's scale (its 0-100 similarity / 100). Rekognition's scores are not
    SFace's, so the SFace-calibrated rise with the number of persons does not apply: the threshold is fixed."""
    return IdentityConfig(name_threshold=config.face_match_threshold / 100,
                          new_below=min(config.uncertain_above, config.face_match_threshold) / 100,
                          learn_threshold=max(config.learn_threshold, config.face_match_threshold) / 100, fpir=None,
                          link_similarity=None)  # SFace's weak-link cosine means nothing on Rekognition's scale


def _aioboto3() -> Any:
    """The SDK, imported only now (see the imports above), or a clear error without the aws extra."""
    try:
        import aioboto3
    except ImportError as e:
        raise RuntimeError(f'resolver.type = "aws" needs the aws extra (pip install "facewatchd[aws]"): {e}') from None
    return aioboto3


def client_config(config: AwsResolverConfig, pool: int = 10) -> AioConfig:
    from aiobotocore.config import AioConfig

    return AioConfig(retries={"mode": "standard", "total_max_attempts": config.max_attempts}, max_pool_connections=pool,
                     connect_timeout=5, read_timeout=30)


def count_throttles(client: Any, on_throttle: Callable[[str], None]) -> None:
    """Call `on_throttle(operation)` for every throttled attempt of the client's calls, the ones botocore
    retries too: those never reach the adapter as an exception, yet are what an account's TPS limit
    looks like. Installed on botocore's needs-retry event, which sees every attempt's answer."""
    def seen(response: Any = None, operation: Any = None, **_: Any) -> None:
        parsed = response[1] if isinstance(response, tuple) and len(response) == 2 else {}
        if isinstance(parsed, dict) and parsed.get("Error", {}).get("Code") in THROTTLE_ERRORS:
            on_throttle(getattr(operation, "name", ""))
        return None  # no opinion: botocore's retry handler decides

    client.meta.events.register("needs-retry", seen)


@asynccontextmanager
async def open_aws_adapters(config: AwsResolverConfig, session: aioboto3.Session | None = None,
                            pool: int = 10, on_throttle: Callable[[str], None] | None = None,
                            clock: Callable[[], float] = time.time) -> AsyncIterator[AwsAdapters]:
    """The four adapters over clients that live as long as the context (and its event loop).
    Endpoints come from the standard AWS_ENDPOINT_URL_<SERVICE> variables when set. `on_throttle` is
    called with the operation's name each time Rekognition throttles a call (see count_throttles)."""
    session = session or _aioboto3().Session(region_name=config.region)
    cfg = client_config(config, pool)
    async with AsyncExitStack() as stack:
        s3, rek, ddb, iot = [await stack.enter_async_context(session.client(name, config=cfg))
                             for name in ("s3", "rekognition", "dynamodb", "iot-data")]
        if on_throttle is not None:
            count_throttles(rek, on_throttle)
        crops = S3CropStore(s3, config)
        yield AwsAdapters(crops, RekognitionCollection(rek, config, crops.read),
                          DynamoNameDirectory(ddb, config, clock=clock), IotShadow(iot))
