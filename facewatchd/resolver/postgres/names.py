"""The name directory in PostgreSQL: persons and the faces handled for them. `faces.face_id` is the primary
key, so a face id is recorded once however many workers handle it; the answer kept is the first one."""

from __future__ import annotations

import time
from typing import Any, Callable

from facewatchd.messages import Resolution
from facewatchd.resolver.ports import FaceRecord, Person, sightings_of
from facewatchd.resolver.postgres.database import Database

_PERSON = "SELECT person_id, name, first_seen, last_seen, possibly, reviewed FROM persons"
_FACES = "SELECT person_id, face_id, thing, face_ref, camera, track, ts, crop_key FROM faces"


class PostgresNameDirectory:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock  # when a face is recorded (its person's last sighting)

    async def handled(self, face_id: str) -> Resolution | None:
        row = await self._db.fetchone("SELECT f.person_id, p.name, f.similarity, f.new_person FROM faces f "
                                      "LEFT JOIN persons p USING (person_id) WHERE f.face_id = %s", (face_id,))
        return Resolution(face_id, row[0], row[1], row[2], bool(row[3])) if row else None

    async def record(self, resolution: Resolution, thing: str, crop_key: str, face_ref: str | None,
                     camera: str = "", track: str = "") -> None:
        now = self._clock()
        async with self._db.connection() as conn, conn.transaction():  # never a face without its person
            await conn.execute("INSERT INTO persons (person_id, name, first_seen, last_seen, possibly) "
                               "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (person_id) DO UPDATE SET last_seen = %s",
                               (resolution.person_id, resolution.name, now, now, resolution.possibly, now))
            await conn.execute("INSERT INTO faces (face_id, person_id, thing, crop_key, face_ref, similarity, "
                               "new_person, ts, camera, track) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                               "ON CONFLICT (face_id) DO NOTHING",
                               (resolution.face_id, resolution.person_id, thing, crop_key, face_ref,
                                resolution.similarity, resolution.new_person, now, camera, track))

    async def _persons(self, rows: list[tuple[Any, ...]]) -> list[Person]:
        """Persons from their rows, with their faces in one query."""
        ids = [r[0] for r in rows]
        faces: dict[str, list[tuple[Any, ...]]] = {i: [] for i in ids}
        for f in await self._db.fetchall(f"{_FACES} WHERE person_id = ANY(%s) ORDER BY ts, face_id", (ids,)):
            faces[f[0]].append(f)
        persons = []
        for person_id, name, first_seen, last_seen, possibly, reviewed in rows:
            own = faces[person_id]
            sightings, tracks, last_seen_on = sightings_of((f[2], f[4], f[5], f[6]) for f in own)
            persons.append(Person(person_id, name, [f[1] for f in own], sorted({f[2] for f in own if f[2]}),
                                  first_seen, last_seen, sum(f[3] is not None for f in own), possibly, reviewed,
                                  sightings, tracks, last_seen_on, own[-1][7] if own else None))
        return persons

    async def get(self, person_id: str) -> Person | None:
        found = await self._persons(await self._db.fetchall(f"{_PERSON} WHERE person_id = %s", (person_id,)))
        return found[0] if found else None

    async def list(self) -> list[Person]:
        return await self._persons(await self._db.fetchall(f"{_PERSON} ORDER BY first_seen, person_id"))

    async def set_name(self, person_id: str, name: str | None) -> Person:
        if await self._db.execute("UPDATE persons SET name = %s WHERE person_id = %s", (name, person_id)) == 0:
            raise KeyError(person_id)
        person = await self.get(person_id)
        assert person is not None
        return person

    async def forget(self, person_id: str) -> list[str]:
        async with self._db.connection() as conn, conn.transaction():
            rows = await (await conn.execute("DELETE FROM faces WHERE person_id = %s RETURNING crop_key",
                                             (person_id,))).fetchall()
            await conn.execute("DELETE FROM persons WHERE person_id = %s", (person_id,))
        return [r[0] for r in rows]

    async def page(self, offset: int, limit: int, unnamed_only: bool = False) -> tuple[list[Person], int]:
        where = "WHERE name IS NULL AND NOT reviewed" if unnamed_only else ""
        total = await self._db.fetchone(f"SELECT count(*) FROM persons {where}")
        rows = await self._db.fetchall(f"{_PERSON} {where} ORDER BY last_seen DESC, person_id LIMIT %s OFFSET %s",
                                       (limit, offset))
        return await self._persons(rows), int(total[0]) if total else 0

    async def set_reviewed(self, person_id: str) -> None:
        if await self._db.execute("UPDATE persons SET reviewed = true WHERE person_id = %s", (person_id,)) == 0:
            raise KeyError(person_id)

    async def seen(self, person_id: str, ts: float) -> None:
        await self._db.execute("UPDATE persons SET last_seen = greatest(last_seen, %s) WHERE person_id = %s",
                               (ts, person_id))

    async def face(self, face_id: str) -> FaceRecord | None:
        row = await self._db.fetchone("SELECT face_id, person_id, thing, crop_key, face_ref FROM faces "
                                      "WHERE face_id = %s", (face_id,))
        return FaceRecord(*row) if row else None

    async def move_face(self, face_id: str, person_id: str, face_ref: str | None) -> None:
        async with self._db.connection() as conn, conn.transaction():
            if await (await conn.execute("SELECT 1 FROM persons WHERE person_id = %s FOR SHARE",
                                         (person_id,))).fetchone() is None:
                raise KeyError(person_id)
            await conn.execute("UPDATE faces SET person_id = %s, face_ref = %s, new_person = false "
                               "WHERE face_id = %s", (person_id, face_ref, face_id))

    async def remove_face(self, face_id: str) -> None:
        await self._db.execute("DELETE FROM faces WHERE face_id = %s", (face_id,))

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM persons")
        return int(row[0]) if row else 0
