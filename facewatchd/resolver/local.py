"""Local adapters for the resolver ports: crops in a directory, the face collection as SFace
embeddings in SQLite (searched with one matrix product), names in SQLite. No cloud needed.

SQLite calls run in a worker thread (asyncio.to_thread) so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.messages import FaceQuery, Resolution
from facewatchd.state import open_sqlite, private_dir
from facewatchd.resolver.crop_embeddings import CropEmbeddings
from facewatchd.resolver.ports import FaceRecord, Match, Person, sightings_of
from facewatchd.vision.embedding import EMBEDDING_DIM



class LocalResolverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["local"] = "local"
    data_dir: Path | None = Field(None, description="default: <device.state_dir>/resolver")
    templates_per_person: int = Field(5, ge=1, le=100, description="faces kept per person in the collection: "
                                      "the first, then faces named at [identity] learn_threshold or above")


class _Db:
    """One SQLite connection shared by the adapters, serialised by a lock, used from worker threads."""

    def __init__(self, path: Path | str) -> None:
        self._conn = open_sqlite(path, "resolver's collection and names", check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.executescript("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
            CREATE TABLE IF NOT EXISTS collection (
                face_ref TEXT PRIMARY KEY, person_id TEXT NOT NULL, embedding BLOB NOT NULL, created REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS collection_person ON collection(person_id);
            CREATE TABLE IF NOT EXISTS persons (
                person_id TEXT PRIMARY KEY, name TEXT, first_seen REAL NOT NULL, last_seen REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS faces (
                face_id TEXT PRIMARY KEY, person_id TEXT NOT NULL, thing TEXT NOT NULL, crop_key TEXT NOT NULL,
                face_ref TEXT, similarity REAL NOT NULL, new_person INTEGER NOT NULL, ts REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
        """)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(persons)")}
        if "possibly" not in columns:
            self._conn.execute("ALTER TABLE persons ADD COLUMN possibly TEXT")
        if "reviewed" not in columns:  # dismissed on the review page: an unknown person nobody needs to name
            self._conn.execute("ALTER TABLE persons ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0")
        if "camera" not in {r[1] for r in self._conn.execute("PRAGMA table_info(faces)")}:  # where it was seen
            self._conn.execute("ALTER TABLE faces ADD COLUMN camera TEXT NOT NULL DEFAULT ''")
            self._conn.execute("ALTER TABLE faces ADD COLUMN track TEXT NOT NULL DEFAULT ''")
        self._conn.execute("CREATE INDEX IF NOT EXISTS persons_last_seen ON persons(last_seen)")

    def run(self, fn: Callable[[sqlite3.Connection], object]) -> object:
        with self._lock:
            return fn(self._conn)

    async def __call__(self, fn: Callable[[sqlite3.Connection], object]) -> object:
        return await asyncio.to_thread(self.run, fn)

    def close(self) -> None:
        self._conn.close()


class DirectoryCropStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _key(self, q: FaceQuery) -> str:
        day = time.strftime("%Y/%m/%d", time.gmtime(q.ts or time.time()))
        return f"faces/{q.thing}/{day}/{q.face_id}.jpg"

    async def put(self, query: FaceQuery) -> str:
        key = self._key(query)
        path = self.root / key

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(query.crop_jpeg)
            os.replace(tmp, path)  # atomic: a crash never leaves half a JPEG under the real name

        await asyncio.to_thread(write)
        return key

    async def read(self, key: str) -> bytes:
        path = self.root / key
        if ".." in Path(key).parts or not path.is_file():
            raise KeyError(key)
        return await asyncio.to_thread(path.read_bytes)

    async def delete(self, keys: list[str]) -> None:
        def remove() -> None:
            for key in keys:
                (self.root / key).unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def delete_older(self, before: float) -> int:
        """Retention: delete crops stored before `before` (epoch s), as the S3 bucket's lifecycle rule does
        on AWS; their face records stay. Returns how many."""
        def remove() -> int:
            removed = 0
            for path in sorted(self.root.rglob("*"), reverse=True):  # files before the folders that hold them
                if path.is_file() and path.stat().st_mtime < before:
                    path.unlink(missing_ok=True)
                    removed += 1
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()  # an emptied day folder
            return removed

        return await asyncio.to_thread(remove)


class SqliteFaceCollection:
    """The shared face collection. A device's request arrives without an embedding (the resolver core drops
    it: never trusted), so the face is found and embedded in the crop with `embed_crop`; an operator's
    enrolment carries the embedding the command line computed from the photo."""

    def __init__(self, db: _Db, embed_crop: Callable[[bytes], np.ndarray | None]) -> None:
        self._db = db
        self._crops = CropEmbeddings(embed_crop)
        self._matrix: np.ndarray | None = None  # all embeddings, rebuilt lazily after a change
        self._persons: list[str] = []
        self._refs: list[str] = []
        self.searches = 0
        self.indexed = 0

    async def _embedding(self, query: FaceQuery) -> np.ndarray:
        return await self._crops.of(query)

    def _load(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT face_ref, person_id, embedding FROM collection").fetchall()
        self._refs = [r[0] for r in rows]
        self._persons = [r[1] for r in rows]
        self._matrix = (np.stack([np.frombuffer(r[2], np.float32) for r in rows]) if rows
                        else np.zeros((0, EMBEDDING_DIM), np.float32))

    async def search(self, query: FaceQuery, threshold: float, exclude: frozenset[str] = frozenset()) -> Match | None:
        emb = await self._embedding(query)
        self.searches += 1
        other_faces = set(query.other_faces)

        def best(conn: sqlite3.Connection) -> Match | None:
            if self._matrix is None:
                self._load(conn)
            assert self._matrix is not None
            sims = self._matrix @ emb
            for i in np.argsort(-sims):  # best first; stops at the first allowed match or the threshold
                if sims[i] < threshold:
                    return None
                if self._persons[i] not in exclude and self._refs[i] not in other_faces:
                    return Match(self._persons[i], float(sims[i]), self._refs[i])
            return None

        return await self._db(best)  # type: ignore[return-value]

    async def index(self, query: FaceQuery, person_id: str) -> str:
        emb = await self._embedding(query)
        norm = float(np.linalg.norm(emb))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError(f"face {query.face_id}: not a usable embedding")
        emb = emb / norm  # a template is a unit vector whoever computed it: cosine stays within [-1, 1]
        self.indexed += 1

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO collection VALUES (?,?,?,?)",
                         (query.face_id, person_id, np.asarray(emb, np.float32).tobytes(), time.time()))
            self._matrix = None

        await self._db(insert)
        return query.face_id

    async def delete_person(self, person_id: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            n = conn.execute("DELETE FROM collection WHERE person_id=?", (person_id,)).rowcount
            self._matrix = None
            return n

        return await self._db(delete)  # type: ignore[return-value]

    async def delete_faces(self, face_refs: list[str]) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM collection WHERE face_ref=?", [(r,) for r in face_refs])
            self._matrix = None

        await self._db(delete)

    async def reassign(self, face_ref: str, person_id: str, crop_key: str) -> str:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE collection SET person_id=? WHERE face_ref=?", (person_id, face_ref))
            self._matrix = None

        await self._db(update)
        return face_ref

    async def count_templates(self) -> int:
        def count(conn: sqlite3.Connection) -> int:
            if self._matrix is None:
                self._load(conn)
            return len(self._persons)

        return await self._db(count)  # type: ignore[return-value]

    async def count(self) -> int:
        return await self._db(lambda c: c.execute("SELECT COUNT(*) FROM collection").fetchone()[0])  # type: ignore


class SqliteNameDirectory:
    def __init__(self, db: _Db, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock  # when a face is recorded (its person's last sighting): a fake one in tests

    async def handled(self, face_id: str) -> Resolution | None:
        def get(conn: sqlite3.Connection) -> Resolution | None:
            row = conn.execute("SELECT f.person_id, p.name, f.similarity, f.new_person FROM faces f "
                               "LEFT JOIN persons p USING (person_id) WHERE f.face_id=?", (face_id,)).fetchone()
            return Resolution(face_id, row[0], row[1], row[2], bool(row[3])) if row else None

        return await self._db(get)  # type: ignore[return-value]

    async def record(self, resolution: Resolution, thing: str, crop_key: str, face_ref: str | None,
                     camera: str = "", track: str = "") -> None:
        now = self._clock()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")  # one transaction: never a face without its person
            try:
                conn.execute("INSERT INTO persons (person_id, name, first_seen, last_seen, possibly) "
                             "VALUES (?,?,?,?,?) ON CONFLICT(person_id) DO UPDATE SET last_seen=?",
                             (resolution.person_id, resolution.name, now, now, resolution.possibly, now))
                conn.execute("INSERT OR IGNORE INTO faces (face_id, person_id, thing, crop_key, face_ref, similarity, "
                             "new_person, ts, camera, track) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (resolution.face_id, resolution.person_id, thing, crop_key, face_ref,
                              resolution.similarity, int(resolution.new_person), now, camera, track))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._db(write)

    def _person(self, conn: sqlite3.Connection, person_id: str) -> Person | None:
        row = conn.execute("SELECT name, first_seen, last_seen, possibly, reviewed FROM persons WHERE person_id=?",
                           (person_id,)).fetchone()
        if row is None:
            return None
        faces = conn.execute("SELECT face_id, thing, face_ref, camera, track, ts, crop_key FROM faces "
                             "WHERE person_id=? ORDER BY ts", (person_id,)).fetchall()
        sightings, tracks, last_seen_on = sightings_of((f[1], f[3], f[4], f[5]) for f in faces)
        return Person(person_id, row[0], [f[0] for f in faces], sorted({f[1] for f in faces if f[1]}), row[1], row[2],
                      sum(f[2] is not None for f in faces), row[3], bool(row[4]), sightings, tracks, last_seen_on,
                      faces[-1][6] if faces else None)

    async def get(self, person_id: str) -> Person | None:
        return await self._db(lambda c: self._person(c, person_id))  # type: ignore[return-value]

    async def list(self) -> list[Person]:
        def all_persons(conn: sqlite3.Connection) -> list[Person]:
            ids = [r[0] for r in conn.execute("SELECT person_id FROM persons ORDER BY first_seen")]
            return [p for p in (self._person(conn, i) for i in ids) if p]

        return await self._db(all_persons)  # type: ignore[return-value]

    async def set_name(self, person_id: str, name: str | None) -> Person:
        def rename(conn: sqlite3.Connection) -> Person:
            if conn.execute("UPDATE persons SET name=? WHERE person_id=?", (name, person_id)).rowcount == 0:
                raise KeyError(person_id)
            person = self._person(conn, person_id)
            assert person is not None
            return person

        return await self._db(rename)  # type: ignore[return-value]

    async def forget(self, person_id: str) -> list[str]:
        def delete(conn: sqlite3.Connection) -> list[str]:
            keys = [r[0] for r in conn.execute("SELECT crop_key FROM faces WHERE person_id=?", (person_id,))]
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM faces WHERE person_id=?", (person_id,))
            conn.execute("DELETE FROM persons WHERE person_id=?", (person_id,))
            conn.execute("COMMIT")
            return keys

        return await self._db(delete)  # type: ignore[return-value]


    async def page(self, offset: int, limit: int, unnamed_only: bool = False) -> tuple[list[Person], int]:
        """One page of persons, newest sighting first (for the review page, only the unnamed ones not
        dismissed), and how many there are in all: one indexed query, however many persons."""
        where = "WHERE name IS NULL AND reviewed = 0" if unnamed_only else ""

        def read(conn: sqlite3.Connection) -> tuple[list[Person], int]:
            total = conn.execute(f"SELECT COUNT(*) FROM persons {where}").fetchone()[0]
            ids = [r[0] for r in conn.execute(
                f"SELECT person_id FROM persons {where} ORDER BY last_seen DESC LIMIT ? OFFSET ?", (limit, offset))]
            return [p for p in (self._person(conn, i) for i in ids) if p], total

        return await self._db(read)  # type: ignore[return-value]

    async def set_reviewed(self, person_id: str) -> None:
        def mark(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE persons SET reviewed = 1 WHERE person_id=?", (person_id,)).rowcount == 0:
                raise KeyError(person_id)

        await self._db(mark)

    async def seen(self, person_id: str, ts: float) -> None:
        await self._db(lambda c: c.execute("UPDATE persons SET last_seen = MAX(last_seen, ?) WHERE person_id=?",
                                           (ts, person_id)))

    async def face(self, face_id: str) -> FaceRecord | None:
        def get(conn: sqlite3.Connection) -> FaceRecord | None:
            row = conn.execute("SELECT face_id, person_id, thing, crop_key, face_ref FROM faces WHERE face_id=?",
                               (face_id,)).fetchone()
            return FaceRecord(*row) if row else None

        return await self._db(get)  # type: ignore[return-value]

    async def move_face(self, face_id: str, person_id: str, face_ref: str | None) -> None:
        def move(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM persons WHERE person_id=?", (person_id,)).fetchone() is None:
                raise KeyError(person_id)
            conn.execute("UPDATE faces SET person_id=?, face_ref=?, new_person=0 WHERE face_id=?",
                         (person_id, face_ref, face_id))

        await self._db(move)

    async def remove_face(self, face_id: str) -> None:
        await self._db(lambda c: c.execute("DELETE FROM faces WHERE face_id=?", (face_id,)))


class LocalResolverStores:
    """The three local adapters over one data directory."""

    def __init__(self, data_dir: Path, embed_crop: Callable[[bytes], np.ndarray | None],
                 clock: Callable[[], float] = time.time) -> None:
        private_dir(data_dir)
        self.db = _Db(data_dir / "resolver.db")
        self.crops = DirectoryCropStore(data_dir / "crops")
        self.collection = SqliteFaceCollection(self.db, embed_crop)
        self.names = SqliteNameDirectory(self.db, clock)

    def close(self) -> None:
        self.db.close()
