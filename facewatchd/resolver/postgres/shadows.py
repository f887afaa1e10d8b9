"""Device shadow documents in PostgreSQL, so the shadow service can run in every worker: the same interface
and AWS semantics as `shadow/store.py`'s SQLite store (synchronous; the service calls it from a thread).

Each call is one transaction under an advisory lock on its shadow, so two workers updating one shadow at once
each get the version after the other's, never the same one. Tombstones keep a deleted shadow's version for
48 hours, as on AWS.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Callable

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from facewatchd.resolver.postgres.database import PostgresUnavailable, server_of
from facewatchd.shadow.document import ShadowDocument, ShadowError, UpdateResult, validate_client_token
from facewatchd.shadow.store import TOMBSTONE_TTL_S, shadow_label


class PostgresShadowStore:
    def __init__(self, dsn: str, *, clock: Callable[[], float] = time.time, tombstone_ttl_s: int = TOMBSTONE_TTL_S,
                 timeout_s: float = 5.0) -> None:
        self._clock = clock
        self._tombstone_ttl_s = tombstone_ttl_s
        self._server = server_of(dsn)
        self._timeout_s = timeout_s
        # the schema is the resolver's (schema.py), migrated when its Database opens
        self._pool = ConnectionPool(dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, timeout=timeout_s,
                                    check=ConnectionPool.check_connection, open=True, name="facewatchd-shadows")

    def _transaction(self, thing: str, name: str, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"shadow/{thing}/{name}",))
                return work(conn)
        except PoolTimeout as e:
            raise PostgresUnavailable(f"PostgreSQL at {self._server} unavailable: no connection within "
                                      f"{self._timeout_s:g} s ({e})") from None
        except psycopg.OperationalError as e:
            raise PostgresUnavailable(f"PostgreSQL at {self._server}: connection lost ({e})") from None

    @staticmethod
    def _row(conn: psycopg.Connection[Any], thing: str, name: str) -> tuple[int, str | None, int | None] | None:
        return conn.execute("SELECT version, document, deleted_at FROM shadows WHERE thing = %s AND name = %s",
                            (thing, name)).fetchone()

    def update(self, thing: str, request: Any, shadow_name: str | None = None, now: int | None = None) -> UpdateResult:
        """Apply an /update request (creating the shadow if needed); raises ShadowError on rejection."""
        name, ts = shadow_name or "", int(self._clock()) if now is None else now

        def work(conn: psycopg.Connection[Any]) -> UpdateResult:
            row = self._row(conn, thing, name)
            if row is not None and row[1] is not None:
                doc = ShadowDocument.from_json(row[1])
            elif row is not None and row[2] is not None and ts - row[2] < self._tombstone_ttl_s:
                doc = ShadowDocument.new(base_version=row[0])
            else:
                doc = ShadowDocument.new()
            result = doc.update(request, ts)
            conn.execute("INSERT INTO shadows (thing, name, version, document, deleted_at) VALUES (%s,%s,%s,%s,NULL) "
                         "ON CONFLICT (thing, name) DO UPDATE SET version = excluded.version, "
                         "document = excluded.document, deleted_at = NULL", (thing, name, doc.version, doc.to_json()))
            return result

        return self._transaction(thing, name, work)  # type: ignore[no-any-return]

    def get(self, thing: str, shadow_name: str | None = None) -> ShadowDocument | None:
        row = self._transaction(thing, shadow_name or "", lambda conn: self._row(conn, thing, shadow_name or ""))
        return ShadowDocument.from_json(row[1]) if row is not None and row[1] is not None else None

    def delete(self, thing: str, shadow_name: str | None = None, request: Any = None,
               now: int | None = None) -> dict[str, Any]:
        """Delete the shadow; returns the /delete/accepted payload, raises ShadowError 404 if there is none."""
        name, ts = shadow_name or "", int(self._clock()) if now is None else now
        token = validate_client_token(request) if isinstance(request, dict) else None

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            row = self._row(conn, thing, name)
            if row is None or row[1] is None:
                raise ShadowError(404, f"No shadow exists with name: '{shadow_label(thing, shadow_name)}'")
            conn.execute("UPDATE shadows SET document = NULL, deleted_at = %s WHERE thing = %s AND name = %s",
                         (ts, thing, name))
            body: dict[str, Any] = {"version": row[0], "timestamp": ts}
            if token is not None:
                body["clientToken"] = token
            return body

        return self._transaction(thing, name, work)  # type: ignore[no-any-return]

    def count(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM shadows WHERE document IS NOT NULL").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "PostgresShadowStore":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
