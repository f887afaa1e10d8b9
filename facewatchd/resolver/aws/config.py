"""The AWS resolver's settings (`[resolver] type = "aws"`) and the identity rule on Rekognition's scale.
Imports nothing of the SDK: app/config.py reads it without the aws extra installed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facewatchd.identity import IdentityConfig


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


def aws_identity(config: AwsResolverConfig) -> IdentityConfig:
    """The identity rule on Rekognition's scale (its 0-100 similarity / 100). Rekognition's scores are not
    SFace's, so the SFace-calibrated rise with the number of persons does not apply: the threshold is fixed."""
    return IdentityConfig(name_threshold=config.face_match_threshold / 100,
                          new_below=min(config.uncertain_above, config.face_match_threshold) / 100,
                          learn_threshold=max(config.learn_threshold, config.face_match_threshold) / 100, fpir=None,
                          link_similarity=None)  # SFace's weak-link cosine means nothing on Rekognition's scale
