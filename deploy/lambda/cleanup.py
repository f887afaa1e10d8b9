"""AWS Lambda entry point for retention, run on a schedule (an EventBridge `Schedule` event, see
template.yaml): forgets every unnamed person not seen for UNNAMED_PERSON_DAYS days, everywhere: their
faces in the Rekognition collection (DeleteFaces), their DynamoDB records, their S3 crops, and, through
each device's shadow, every device cache that holds them. Named persons are never forgotten.

S3 crops and DynamoDB records expire on their own (lifecycle rule, TTL), Rekognition faces never do:
without this, the collection keeps the faces of people nobody will ever see again. The rule is the
resolver core's (`Resolver.forget_unseen`), the same as the daemon's retention plugin applies locally.
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
from facewatchd.resolver.aws import AwsResolverConfig, open_aws_adapters

log = structlog.get_logger("facewatchd.lambda.cleanup")


class CleanupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolver: AwsResolverConfig
    unnamed_person_days: float = Field(30.0, gt=0, le=3650)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "CleanupSettings":
        # Only what retention touches: the stores, not the matching thresholds.
        names = {"region": "AWS_REGION", "bucket": "BUCKET", "table": "TABLE", "collection_id": "COLLECTION_ID",
                 "crop_prefix": "CROP_PREFIX", "max_attempts": "MAX_ATTEMPTS", "retention_days": "RETENTION_DAYS"}
        resolver = {field: env[var] for field, var in names.items() if env.get(var)}
        days = {"unnamed_person_days": env["UNNAMED_PERSON_DAYS"]} if env.get("UNNAMED_PERSON_DAYS") else {}
        return cls.model_validate({"resolver": resolver, **days})


async def cleanup(settings: CleanupSettings, now: float | None = None,
                  session: aioboto3.Session | None = None) -> dict[str, Any]:
    """One retention sweep at `now` (default: the current time); returns the persons forgotten."""
    now = time.time() if now is None else now
    async with open_aws_adapters(settings.resolver, session) as adapters:
        resolver = adapters.resolver(settings.resolver)
        forgotten = await resolver.forget_unseen(settings.unnamed_person_days, now)
    log.info("retention_sweep", persons=len(forgotten), days=settings.unnamed_person_days)
    return {"ok": True, "forgotten": [p.person_id for p in forgotten]}


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The scheduled event carries nothing we need; each run is a fresh sweep (a run that failed half way
    is finished by the next: forgetting is idempotent)."""
    configure_logging("json")
    return asyncio.run(cleanup(CleanupSettings.from_env(os.environ)))
