"""The name directory over DynamoDB: persons, their faces and the idempotency records, in one table.

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

import time
from decimal import Decimal
from typing import Any, Callable

from facewatchd.messages import Resolution
from facewatchd.resolver.aws.config import AwsResolverConfig
from facewatchd.resolver.aws.retry import ClientError, backoff, error_code
from facewatchd.resolver.ports import FaceRecord, Person, sightings_of

DAY_S = 86_400
PROFILE = "PROFILE"
ORPHANS = "ORPHANS"  # the partition of collection faces found without a person (see cleanup)
# Key schema shared by the adapter, the tests and (by hand) deploy/lambda/template.yaml.
TABLE_KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
TABLE_ATTRIBUTES = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]
TTL_ATTRIBUTE = "expires_at"


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
                if error_code(e) != "TransactionCanceledException":
                    raise
                reasons = [c.get("Code") for c in e.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return  # already recorded (redelivery, or a retried call that had in fact succeeded)
                if "TransactionConflict" not in reasons:
                    raise
            await backoff(attempt)
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
            if error_code(e) == "ConditionalCheckFailedException":
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
            if error_code(e) == "ConditionalCheckFailedException":
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
            if error_code(e) != "ConditionalCheckFailedException":  # unknown, or seen later already: nothing to do
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
            if error_code(e) == "TransactionCanceledException" and "ConditionalCheckFailed" in reasons:
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
                await backoff(attempt)
            if pending:
                raise RuntimeError(f"DynamoDB left {len(pending[self._table])} writes unprocessed")


def _ddb_value(v: Any) -> Any:
    # DynamoDB has no float type: numbers go as Decimal, via str so 0.1 stays 0.1.
    if isinstance(v, float):
        return Decimal(repr(v))
    return v
