"""The face collection in PostgreSQL: each template a unit vector in a pgvector column with an HNSW
`vector_cosine_ops` index, searched nearest first with `<=>` (cosine distance, so similarity = 1 - distance,
the same cosine the SQLite matrix computes). The identity rule itself stays in the core."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from facewatchd.messages import FaceQuery
from facewatchd.resolver.crop_embeddings import CropEmbeddings
from facewatchd.resolver.ports import Match
from facewatchd.resolver.postgres.database import Database

NEAREST = 10  # nearest templates read per search, before the persons it cannot be are left out


class PostgresFaceCollection:
    """A device's request arrives without an embedding (the core drops it: never trusted), so the face is found
    and embedded in the crop with `embed_crop`, in a worker thread; an enrolment carries its own."""

    def __init__(self, db: Database, embed_crop: Callable[[bytes], np.ndarray | None]) -> None:
        self._db = db
        self._crops = CropEmbeddings(embed_crop)
        self.searches = 0
        self.indexed = 0

    async def embedding(self, query: FaceQuery) -> np.ndarray:
        """The query's embedding (computed from its crop once, then kept a while): a worker calls it before it
        takes the decision lock, so the costly part runs in parallel across workers."""
        return await self._crops.of(query)

    async def search(self, query: FaceQuery, threshold: float, exclude: frozenset[str] = frozenset()) -> Match | None:
        emb = np.asarray(await self.embedding(query), np.float32)
        self.searches += 1
        other_faces = set(query.other_faces)
        rows = await self._db.fetchall(
            "SELECT face_ref, person_id, 1 - (embedding <=> %s) FROM collection ORDER BY embedding <=> %s LIMIT %s",
            (emb, emb, NEAREST + len(exclude) + len(other_faces)))
        for face_ref, person_id, similarity in rows:  # best first, as the SQLite matrix walks them
            if similarity < threshold:
                return None
            if person_id not in exclude and face_ref not in other_faces:
                return Match(person_id, float(similarity), face_ref)
        return None

    async def index(self, query: FaceQuery, person_id: str) -> str:
        emb = await self.embedding(query)
        norm = float(np.linalg.norm(emb))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError(f"face {query.face_id}: not a usable embedding")
        self.indexed += 1
        await self._db.execute("INSERT INTO collection (face_ref, person_id, embedding, created) VALUES (%s,%s,%s,%s) "
                               "ON CONFLICT (face_ref) DO NOTHING",
                               (query.face_id, person_id, np.asarray(emb / norm, np.float32), time.time()))
        return query.face_id

    async def delete_person(self, person_id: str) -> int:
        return await self._db.execute("DELETE FROM collection WHERE person_id = %s", (person_id,))

    async def delete_faces(self, face_refs: list[str]) -> None:
        await self._db.execute("DELETE FROM collection WHERE face_ref = ANY(%s)", (face_refs,))

    async def reassign(self, face_ref: str, person_id: str, crop_key: str) -> str:
        await self._db.execute("UPDATE collection SET person_id = %s WHERE face_ref = %s", (person_id, face_ref))
        return face_ref

    async def count_templates(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM collection")
        return int(row[0]) if row else 0

    async def count(self) -> int:
        return await self.count_templates()
