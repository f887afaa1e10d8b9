"""The PostgreSQL resolver's schema, as numbered migrations run at start. Each worker runs `migrate` when it
opens; a transaction-level advisory lock makes the first one apply what is missing while the others wait,
and `schema_version` says what is applied. A migration is never edited once released: add the next one."""

from __future__ import annotations

from typing import Any

from facewatchd.vision.embedding import EMBEDDING_DIM

MIGRATION_LOCK = 0x66616365  # "face": one advisory lock key for schema changes

MIGRATIONS: list[str] = [
    # 1: the face collection (pgvector, HNSW cosine), persons, faces, crops, shadows
    f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE collection (
        face_ref   text PRIMARY KEY,
        person_id  text NOT NULL,
        embedding  vector({EMBEDDING_DIM}) NOT NULL,  -- a unit vector: 1 - (a <=> b) is the cosine
        created    double precision NOT NULL);
    CREATE INDEX collection_person ON collection (person_id);
    CREATE INDEX collection_embedding ON collection USING hnsw (embedding vector_cosine_ops);
    CREATE TABLE persons (
        person_id  text PRIMARY KEY,
        name       text,
        first_seen double precision NOT NULL,
        last_seen  double precision NOT NULL,
        possibly   text,
        reviewed   boolean NOT NULL DEFAULT false);
    CREATE INDEX persons_last_seen ON persons (last_seen);
    CREATE TABLE faces (  -- one row per face id: what makes a request idempotent across workers
        face_id    text PRIMARY KEY,
        person_id  text NOT NULL,
        thing      text NOT NULL,
        crop_key   text NOT NULL,
        face_ref   text,
        similarity double precision NOT NULL,
        new_person boolean NOT NULL,
        ts         double precision NOT NULL,
        camera     text NOT NULL DEFAULT '',
        track      text NOT NULL DEFAULT '');
    CREATE INDEX faces_person ON faces (person_id);
    CREATE TABLE crops (
        key        text PRIMARY KEY,
        jpeg       bytea NOT NULL,
        stored     double precision NOT NULL);
    CREATE INDEX crops_stored ON crops (stored);
    CREATE TABLE shadows (  -- as shadow/store.py's SQLite table: NULL document is a tombstone
        thing      text NOT NULL,
        name       text NOT NULL,
        version    bigint NOT NULL,
        document   text,
        deleted_at bigint,
        PRIMARY KEY (thing, name));
    """,
    # 2: the workers' share key: part of their MQTT shared subscription's group name (resolver/workers.py
    # `share_group_name`), made here so every worker reads the same one and no device ever sees it
    """
    CREATE TABLE cluster_secrets (
        name       text PRIMARY KEY,
        value      text NOT NULL);
    INSERT INTO cluster_secrets VALUES ('share_key', replace(gen_random_uuid()::text, '-', ''));
    """,
]


async def migrate(conn: Any) -> int:
    """Apply the migrations this database lacks, in order, in one transaction; returns the
    version it is at. `conn` is an autocommit psycopg AsyncConnection."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL, "
                           "applied timestamptz NOT NULL DEFAULT now())")
        row = await (await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")).fetchone()
        current = int(row[0])
        if current > len(MIGRATIONS):
            raise RuntimeError(f"the database's schema is version {current}, newer than this facewatchd knows "
                               f"({len(MIGRATIONS)}): upgrade facewatchd")
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return len(MIGRATIONS)
