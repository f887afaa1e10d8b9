"""`facewatchd resolver migrate --from sqlite DIR --to postgresql DSN`: an existing on-prem or embedded
resolver's data (DIR: its resolver.db, crops/ and shadows.db) moved into PostgreSQL, with a count check at
the end.

The source is only read (SQLite opened read-only). Rows are copied as they are, templates included, so
nothing is embedded again; a row whose key the target already holds is kept as the target has it, so a
migration that was stopped can simply be run again. The check counts, per kind, the source's keys that the
target now holds.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import SecretStr

from facewatchd.resolver.postgres.config import PostgresResolverConfig
from facewatchd.resolver.postgres.database import Database

BATCH = 1000


@dataclass(frozen=True, slots=True)
class Moved:
    kind: str
    source: int  # rows in the source
    present: int  # of them, how many the target holds now

    @property
    def ok(self) -> bool:
        return self.present == self.source


def _read(path: Path, sql: str) -> Iterator[tuple[Any, ...]]:
    if not path.exists():
        return
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield from conn.execute(sql)
    finally:
        conn.close()


def _crops(root: Path) -> Iterator[tuple[str, bytes, float]]:
    for path in sorted(root.rglob("*.jpg")) if root.is_dir() else []:
        yield path.relative_to(root).as_posix(), path.read_bytes(), path.stat().st_mtime


def _batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# kind → (rows from the source, INSERT into the target, the target's key column, how a row's key is read)
def _plan(source: Path) -> list[tuple[str, Iterator[tuple[Any, ...]], str, str]]:
    db, shadows = source / "resolver.db", source / "shadows.db"
    templates = ((ref, person, np.frombuffer(emb, np.float32), created) for ref, person, emb, created in
                 _read(db, "SELECT face_ref, person_id, embedding, created FROM collection"))
    return [
        ("persons", _read(db, "SELECT person_id, name, first_seen, last_seen, possibly, reviewed FROM persons"),
         "INSERT INTO persons (person_id, name, first_seen, last_seen, possibly, reviewed) "
         "VALUES (%s,%s,%s,%s,%s,%s::integer::boolean) "
         "ON CONFLICT DO NOTHING", "SELECT count(*) FROM persons WHERE person_id = ANY(%s)"),
        ("faces", _read(db, "SELECT face_id, person_id, thing, crop_key, face_ref, similarity, new_person, ts, "
                            "camera, track FROM faces"),
         "INSERT INTO faces (face_id, person_id, thing, crop_key, face_ref, similarity, new_person, ts, camera, track) "
         "VALUES (%s,%s,%s,%s,%s,%s,%s::integer::boolean,%s,%s,%s) ON CONFLICT DO NOTHING",
         "SELECT count(*) FROM faces WHERE face_id = ANY(%s)"),
        ("templates", templates,
         "INSERT INTO collection (face_ref, person_id, embedding, created) VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING",
         "SELECT count(*) FROM collection WHERE face_ref = ANY(%s)"),
        ("crops", _crops(source / "crops"),
         "INSERT INTO crops (key, jpeg, stored) VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
         "SELECT count(*) FROM crops WHERE key = ANY(%s)"),
        ("shadows", _read(shadows, "SELECT thing, name, version, document, deleted_at FROM shadows"),
         "INSERT INTO shadows (thing, name, version, document, deleted_at) VALUES (%s,%s,%s,%s,%s) "
         "ON CONFLICT DO NOTHING",
         "SELECT count(*) FROM shadows WHERE thing || '/' || name = ANY(%s)"),
    ]


def _key(kind: str, row: tuple[Any, ...]) -> str:
    return f"{row[0]}/{row[1]}" if kind == "shadows" else str(row[0])


async def migrate_sqlite(source: Path, dsn: str) -> list[Moved]:
    """Copy everything under `source` into the PostgreSQL at `dsn` (schema migrated first); per kind, how
    many source rows the target holds at the end."""
    if not (source / "resolver.db").exists():
        raise FileNotFoundError(f"{source}: no resolver.db here (the resolver's data dir: [resolver] data_dir, "
                                "[server] data_dir, or <state_dir>/resolver)")
    moved = []
    async with Database(PostgresResolverConfig(dsn=SecretStr(dsn))) as db:
        for kind, rows, insert, count in _plan(source):
            keys: list[str] = []
            for batch in _batches(rows):
                async with db.connection() as conn, conn.transaction():
                    async with conn.cursor() as cur:
                        await cur.executemany(insert, batch)
                keys += [_key(kind, row) for row in batch]
            present = 0
            for start in range(0, len(keys), BATCH):
                row = await db.fetchone(count, (keys[start:start + BATCH],))
                present += int(row[0]) if row else 0
            moved.append(Moved(kind, len(keys), present))
    return moved
