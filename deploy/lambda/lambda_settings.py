"""The Lambda's settings, from the function's environment (template.yaml sets it)."""

from __future__ import annotations

from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field

from facewatchd.resolver.aws import AwsResolverConfig


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolver: AwsResolverConfig
    dlq_url: str | None = None
    # 1 by default: two messages resolved at once that show the same new person would both miss the
    # search and index two persons. Higher values trade that risk (across things only) for latency.
    concurrency: int = Field(1, ge=1, le=64, description="messages of different things resolved at once")
    ensure_collection: bool = True
    idempotency_table: str | None = None
    # Longer than any redelivery (5 receives x 720 s visibility); a failed message leaves no record at all.
    idempotency_ttl_s: int = Field(86_400, ge=60, description="seconds a processed message id is remembered")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        names = {"region": "AWS_REGION", "bucket": "BUCKET", "table": "TABLE", "collection_id": "COLLECTION_ID",
                 "face_match_threshold": "FACE_MATCH_THRESHOLD", "quality_filter": "QUALITY_FILTER",
                 "max_faces": "MAX_FACES", "retention_days": "RETENTION_DAYS", "crop_prefix": "CROP_PREFIX",
                 "max_attempts": "MAX_ATTEMPTS", "uncertain_above": "UNCERTAIN_ABOVE",
                 "learn_threshold": "LEARN_THRESHOLD", "templates_per_person": "TEMPLATES_PER_PERSON"}
        resolver = {field: env[var] for field, var in names.items() if env.get(var)}
        return cls(resolver=AwsResolverConfig.model_validate(resolver), dlq_url=env.get("DLQ_URL") or None,
                   concurrency=int(env.get("BATCH_CONCURRENCY", "1")),
                   ensure_collection=env.get("ENSURE_COLLECTION", "true").lower() == "true",
                   idempotency_table=env.get("IDEMPOTENCY_TABLE") or None,
                   idempotency_ttl_s=int(env.get("IDEMPOTENCY_TTL_S", "86400")))
