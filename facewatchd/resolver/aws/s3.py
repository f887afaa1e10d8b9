"""The crop store over S3: one object per face crop, server-side encrypted and tagged for retention."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from facewatchd.messages import FaceQuery
from facewatchd.resolver.aws.config import AwsResolverConfig
from facewatchd.resolver.aws.retry import ClientError, error_code


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
            if error_code(e) in ("NoSuchKey", "404"):
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
