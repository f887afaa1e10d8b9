"""The connection pool the PostgreSQL adapters share (psycopg 3, async, with pgvector's type), and the one
error they raise when the database cannot be reached.

A connection that broke is dropped by the pool when its call fails, so a PostgreSQL that restarted is
reconnected to on the next call (not checked before each use: that would be one more round trip a call). A call
that cannot get a connection within `connect_timeout_s`, or whose connection breaks, raises
PostgresUnavailable naming the server: the resolver service logs it and leaves the face unanswered, and the
device's outbox sends it again (the core is idempotent by face id), so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable

import psycopg
import structlog
from pgvector.psycopg import register_vector_async
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from facewatchd.resolver.postgres.config import PostgresResolverConfig
from facewatchd.resolver.postgres.schema import migrate

log = structlog.get_logger("facewatchd.resolver.postgres")

DECISION_LOCK = 0x64656369  # "deci": the advisory lock that serialises deciding who a face is
SHADOW_LEAD_LOCK = 0x73686164  # "shad": held by the one worker whose shadow service takes device requests
LEAD_POLL_S = 0.5  # how often a follower tries for the lead, and the leader checks it still holds it
LEAD_CHECK_TIMEOUT_S = 5.0  # a leader whose check takes longer gives the lead up (a cut link, a frozen server)
# ... long before the server drops the silent session and frees its lock (10 + 5 x 3 s of keepalives)
LEAD_SERVER_KEEPALIVE = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
# this backend (the one that took the lock) still holds it; a bigint key below 2^32: classid 0, objid the key
LEAD_HELD = ("SELECT pg_backend_pid() = %s AND EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
             "AND pid = pg_backend_pid() AND classid = 0 AND objid = %s::bigint::oid AND objsubid = 1 AND granted)")


class PostgresUnavailable(ConnectionError):
    """PostgreSQL cannot be reached or the connection broke: retried by the device's resend."""


def server_of(dsn: str) -> str:
    """host:port/db of a DSN, for messages (never its password)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unreadable DSN"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class Database:
    """`async with Database(config) as db:` migrates, then opens the pool."""

    def __init__(self, config: PostgresResolverConfig) -> None:
        self.config = config
        self.server = server_of(config.dsn.get_secret_value())
        self._pool: AsyncConnectionPool | None = None

    async def __aenter__(self) -> "Database":
        try:
            async with await self._direct() as conn:
                version = await migrate(conn)
        except psycopg.OperationalError as e:
            raise PostgresUnavailable(f"PostgreSQL at {self.server} unavailable: {_first_line(e)}") from None
        self._pool = AsyncConnectionPool(self.config.dsn.get_secret_value(), min_size=1,
                                         max_size=self.config.pool_size, open=False, kwargs={"autocommit": True}, configure=self._configure,
                                         timeout=self.config.connect_timeout_s, name="facewatchd-resolver")
        await self._pool.open(wait=False)
        log.info("postgres_opened", server=self.server, schema_version=version, pool=self.config.pool_size)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await register_vector_async(conn)
        await conn.execute(f"SET hnsw.ef_search = {int(self.config.hnsw_ef_search)}")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled autocommit connection; PostgresUnavailable when there is none or it breaks."""
        assert self._pool is not None, "Database used outside `async with`"
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as e:
            raise PostgresUnavailable(f"PostgreSQL at {self.server} unavailable: no connection within "
                                      f"{self.config.connect_timeout_s:g} s ({_first_line(e)})") from None
        except psycopg.OperationalError as e:
            raise PostgresUnavailable(f"PostgreSQL at {self.server}: connection lost ({_first_line(e)})") from None

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        async with self.connection() as conn:
            return await (await conn.execute(sql, params)).fetchone()

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self.connection() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Runs one statement; returns the rows it touched."""
        async with self.connection() as conn:
            return (await conn.execute(sql, params)).rowcount

    @contextlib.asynccontextmanager
    async def deciding(self) -> AsyncIterator[None]:
        """Held while one face is decided and recorded (search → index → record): every worker takes the
        same transaction-level advisory lock, so two workers never both miss a new person and enrol them
        twice. A worker that dies holding it loses its connection, and PostgreSQL releases the lock."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DECISION_LOCK,))
            yield

    async def lead(self, on_lead: Callable[[], Awaitable[None]]) -> None:
        """Wait until this worker holds the shadow lead (a session-level advisory lock on a connection of its
        own), await `on_lead`, and return only when the lead is lost (raises PostgresUnavailable). A worker
        that dies loses its connection, PostgreSQL releases the lock, and a follower takes it within
        LEAD_POLL_S.

        The leader must give the lead up before the server could give its lock to another worker, or two
        would answer every shadow request: each check has LEAD_CHECK_TIMEOUT_S, while the server drops a
        silent client only after its keepalives (LEAD_SERVER_KEEPALIVE) have gone unanswered, well after. The
        check asks pg_locks whether this very backend still holds the lock, not only whether the connection
        answers: a pooler in transaction mode (PgBouncer), or a stray pg_advisory_unlock_all, would otherwise
        leave two leaders. Connect the workers directly or through session pooling."""
        try:
            async with await self._direct(keepalives=1, keepalives_idle=5, keepalives_interval=2,
                                          keepalives_count=3) as conn:
                await conn.execute(LEAD_SERVER_KEEPALIVE)
                while not await self._checked(conn, "SELECT pg_try_advisory_lock(%s)", (SHADOW_LEAD_LOCK,)):
                    await asyncio.sleep(LEAD_POLL_S)
                backend = await self._checked(conn, "SELECT pg_backend_pid()", ())
                await on_lead()
                while True:
                    await asyncio.sleep(LEAD_POLL_S)
                    if not await self._checked(conn, LEAD_HELD, (backend, SHADOW_LEAD_LOCK)):
                        raise PostgresUnavailable(f"PostgreSQL at {self.server}: shadow lead lock no longer held "
                                                  "by this session (a pooler, or an unlock elsewhere)")
        except (psycopg.OperationalError, TimeoutError) as e:
            raise PostgresUnavailable(f"PostgreSQL at {self.server}: shadow lead lost ({_first_line(e)})") from None

    async def _direct(self, **options: Any) -> psycopg.AsyncConnection[Any]:
        """An autocommit connection of its own, outside the pool (a migration, the shadow lead's lock)."""
        return await psycopg.AsyncConnection.connect(self.config.dsn.get_secret_value(), autocommit=True,
                                                     connect_timeout=max(1, int(self.config.connect_timeout_s)),
                                                     **options)

    @staticmethod
    async def _checked(conn: psycopg.AsyncConnection[Any], sql: str, params: tuple[Any, ...]) -> Any:
        async with asyncio.timeout(LEAD_CHECK_TIMEOUT_S):
            row = await (await conn.execute(sql, params)).fetchone()
        return row[0] if row else None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
