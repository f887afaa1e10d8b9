"""The PostgreSQL resolver's schema and connection on a real PostgreSQL 16 + pgvector: versioned migrations run
at start (once, however many workers start together), the HNSW cosine index that searches use, the config
that chooses it, and a clear error when the database cannot be reached."""

from __future__ import annotations

import asyncio

import numpy as np
import psycopg
import pytest

from facewatchd.app.config import parse_config
from facewatchd.config import ConfigError
from facewatchd.resolver.postgres.config import PostgresResolverConfig
from facewatchd.resolver.postgres.database import Database, PostgresUnavailable
from facewatchd.resolver.postgres.schema import MIGRATIONS
from facewatchd.resolver.postgres.server import HOST, free_port
from facewatchd.vision.embedding import EMBEDDING_DIM


def versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def test_migrations_run_once_at_start_even_when_workers_start_together(postgres_dsn) -> None:
    config = PostgresResolverConfig(dsn=postgres_dsn)
    async with Database(config), Database(config), Database(config):  # three workers at once
        pass
    assert versions(postgres_dsn) == list(range(1, len(MIGRATIONS) + 1))
    async with Database(config):  # a restart: nothing to apply
        pass
    assert versions(postgres_dsn) == list(range(1, len(MIGRATIONS) + 1))


async def test_a_database_from_a_newer_facewatchd_is_refused(postgres_dsn) -> None:
    async with Database(PostgresResolverConfig(dsn=postgres_dsn)):
        pass
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(RuntimeError, match="newer than this facewatchd knows"):
        async with Database(PostgresResolverConfig(dsn=postgres_dsn)):
            pass


async def test_searches_use_the_hnsw_cosine_index(postgres_dsn) -> None:
    async with Database(PostgresResolverConfig(dsn=postgres_dsn)) as db:
        rng = np.random.default_rng(1)
        async with db.connection() as conn:
            for i, v in enumerate(rng.normal(size=(200, EMBEDDING_DIM)).astype(np.float32)):
                await conn.execute("INSERT INTO collection VALUES (%s, %s, %s, 0)", (f"f{i}", f"p{i}", v / np.linalg.norm(v)))
            definition = (await (await conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'collection_embedding'")).fetchone())[0]
            assert "USING hnsw (embedding vector_cosine_ops)" in definition
            await conn.execute("SET enable_seqscan = off")  # 200 rows: the planner would scan them otherwise
            probe = np.ones(EMBEDDING_DIM, np.float32)
            plan = "\n".join(r[0] for r in await (await conn.execute(
                "EXPLAIN SELECT face_ref FROM collection ORDER BY embedding <=> %s LIMIT 10", (probe,))).fetchall())
    assert "Index Scan using collection_embedding" in plan


async def test_an_unreachable_database_is_a_clear_error_naming_it() -> None:
    port = free_port()  # nobody listens there
    config = PostgresResolverConfig(dsn=f"postgresql://facewatchd:secret@{HOST}:{port}/faces", connect_timeout_s=1)
    with pytest.raises(PostgresUnavailable, match=f"PostgreSQL at {HOST}:{port}/faces unavailable") as failed:
        await asyncio.wait_for(Database(config).__aenter__(), 10)
    assert "secret" not in str(failed.value)


def test_the_resolver_type_chooses_postgresql_with_a_dsn() -> None:
    config = parse_config({"resolver": {"type": "postgresql", "dsn": "postgresql://fw:pw@db:5432/faces"}})
    assert isinstance(config.resolver, PostgresResolverConfig)
    assert "pw" not in repr(config.resolver)  # the DSN may hold a password
    with pytest.raises(ConfigError, match="dsn"):
        parse_config({"resolver": {"type": "postgresql"}})
    with pytest.raises(ConfigError, match="pool"):
        parse_config({"resolver": {"type": "postgresql", "dsn": "postgresql:///x", "pool": 3}})
    with pytest.raises(ConfigError, match='share_group: several workers need a shared store, resolver.type = '
                                          '"postgresql", not "local"'):
        parse_config({"server": {"share_group": "resolvers"}})  # two workers on SQLite files would split persons
    workers = parse_config({"resolver": {"type": "postgresql", "dsn": "postgresql:///x"},
                            "server": {"share_group": "resolvers", "client_id": "facewatchd-resolver-1"}})
    assert workers.server.share_group == "resolvers"
