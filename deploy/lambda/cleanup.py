"""AWS Lambda entry point for retention, run on a schedule (an EventBridge `Schedule` event, see
template.yaml): forgets every unnamed person not seen for UNNAMED_PERSON_DAYS days, everywhere: their
faces in the Rekognition collection (DeleteFaces), their DynamoDB records, their S3 crops, and, through
each device's shadow, every device cache that holds them. Named persons are never forgotten.

S3 crops and DynamoDB records expire on their own (lifecycle rule, TTL), Rekognition faces never do:
without this, the collection keeps the faces of people nobody will ever see again. The rule is the
resolver core's (`Resolver.forget_unseen`), the same as the daemon's retention plugin applies locally.

It also deletes the collection's faces whose person is no longer in DynamoDB (its records expired by
TTL after RETENTION_DAYS unseen, named or not). The resolver indexes a new person's face a moment
before it records the person, so a face without a person is first only marked; it is deleted when a
run at least ORPHAN_GRACE_S later finds it still without one.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Mapping

import aioboto3
import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.logs import configure_logging
from facewatchd.resolver.aws import AwsAdapters, AwsResolverConfig, open_aws_adapters

log = structlog.get_logger("facewatchd.lambda.cleanup")


class CleanupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolver: AwsResolverConfig
    unnamed_person_days: float = Field(30.0, gt=0, le=3650)
    # Far longer than a new person's index-then-record, or SQS's redeliveries of one that failed between.
    orphan_grace_s: float = Field(86_400.0, ge=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "CleanupSettings":
        # Only what retention touches: the stores, not the matching thresholds.
        names = {"region": "AWS_REGION", "bucket": "BUCKET", "table": "TABLE", "collection_id": "COLLECTION_ID",
                 "crop_prefix": "CROP_PREFIX", "max_attempts": "MAX_ATTEMPTS", "retention_days": "RETENTION_DAYS"}
        resolver = {field: env[var] for field, var in names.items() if env.get(var)}
        own = {field: env[var] for field, var in (("unnamed_person_days", "UNNAMED_PERSON_DAYS"),
                                                  ("orphan_grace_s", "ORPHAN_GRACE_S")) if env.get(var)}
        return cls.model_validate({"resolver": resolver, **own})


async def cleanup(settings: CleanupSettings, now: float | None = None,
                  session: aioboto3.Session | None = None) -> dict[str, Any]:
    """One retention sweep at `now` (default: the current time); returns the persons forgotten."""
    now = time.time() if now is None else now
    async with open_aws_adapters(settings.resolver, session) as adapters:
        resolver = adapters.resolver(settings.resolver)
        forgotten = await resolver.forget_unseen(settings.unnamed_person_days, now)
        orphans = await delete_orphan_faces(adapters, now, settings.orphan_grace_s)
    log.info("retention_sweep", persons=len(forgotten), days=settings.unnamed_person_days, orphan_faces=orphans)
    return {"ok": True, "forgotten": [p.person_id for p in forgotten], "orphan_faces": orphans}


async def delete_orphan_faces(adapters: AwsAdapters, now: float, grace_s: float) -> int:
    """Delete collection faces whose person has had no record for at least `grace_s` (marked by an earlier
    run); mark the ones found now. Returns how many faces were deleted."""
    faces = await adapters.collection.faces_by_person()
    persons = {p.person_id for p in await adapters.names.list()}
    orphans = {ref: person for person, refs in faces.items() if person not in persons for ref in refs}
    marks = await adapters.names.orphan_marks()
    due = [ref for ref in orphans if ref in marks and marks[ref] <= now - grace_s]
    # The scan is eventually consistent and a person may have come back since: ask each one again.
    back = {person for person in {orphans[ref] for ref in due} if await adapters.names.get(person) is not None}
    due = [ref for ref in due if orphans[ref] not in back]
    await adapters.collection.delete_faces(due)
    # Marks of faces deleted now, or that have a person again (it was being recorded), go.
    await adapters.names.unmark_orphans([ref for ref in marks if ref not in orphans or ref in due])
    await adapters.names.mark_orphans({ref: p for ref, p in orphans.items() if ref not in marks}, now)
    if due:
        log.info("orphan_faces_deleted", faces=len(due), persons=sorted({orphans[ref] for ref in due}))
    return len(due)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The scheduled event carries nothing we need; each run is a fresh sweep (a run that failed half way
    is finished by the next: forgetting is idempotent)."""
    configure_logging("json")
    return asyncio.run(cleanup(CleanupSettings.from_env(os.environ)))
