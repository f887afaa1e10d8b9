"""The crop store in PostgreSQL: each JPEG in a `bytea` row under the same key the directory store uses, so
any worker can show or re-index any crop."""

from __future__ import annotations

import time

from facewatchd.messages import FaceQuery
from facewatchd.resolver.postgres.database import Database


def crop_key(query: FaceQuery) -> str:
    day = time.strftime("%Y/%m/%d", time.gmtime(query.ts or time.time()))
    return f"faces/{query.thing}/{day}/{query.face_id}.jpg"


class PostgresCropStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, query: FaceQuery) -> str:
        key = crop_key(query)
        await self._db.execute("INSERT INTO crops (key, jpeg, stored) VALUES (%s, %s, %s) "
                               "ON CONFLICT (key) DO UPDATE SET jpeg = excluded.jpeg", (key, query.crop_jpeg, time.time()))
        return key

    async def read(self, key: str) -> bytes:
        row = await self._db.fetchone("SELECT jpeg FROM crops WHERE key = %s", (key,))
        if row is None:
            raise KeyError(key)
        return bytes(row[0])

    async def delete(self, keys: list[str]) -> None:
        if keys:
            await self._db.execute("DELETE FROM crops WHERE key = ANY(%s)", (keys,))

    async def delete_older(self, before: float) -> int:
        """Retention: delete crops stored before `before` (epoch s); their face records stay. Returns how many."""
        return await self._db.execute("DELETE FROM crops WHERE stored < %s", (before,))

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM crops")
        return int(row[0]) if row else 0
