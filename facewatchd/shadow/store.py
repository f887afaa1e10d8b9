"""Shadow documents persisted in SQLite, keyed by (thing, shadow name; "" for the classic shadow).

Every call is one short transaction (BEGIN IMMEDIATE … COMMIT), so a crash leaves either the old or the
new document, never half of one. Calls are synchronous and thread-safe: async callers run them with
`asyncio.to_thread`. A deleted shadow leaves a tombstone holding its version for 48 hours, because AWS
continues the version of a shadow re-created under the same name within that time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, TypeVar

from facewatchd.state import open_sqlite
from facewatchd.shadow.document import ShadowDocument, ShadowError, UpdateResult, validate_client_token

TOMBSTONE_TTL_S = 48 * 3600
R = TypeVar("R")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadows (
    thing      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    document   TEXT,              -- NULL: deleted (tombstone)
    deleted_at INTEGER,
    PRIMARY KEY (thing, name)
)
"""


def shadow_label(thing: str, shadow_name: str | None) -> str:
    """How AWS names a shadow in error messages."""
    return f"{thing}~{shadow_name}" if shadow_name else thing


class ShadowStore:
    def __init__(self, path: str | Path = ":memory:", *, clock: Callable[[], float] = time.time,
                 tombstone_ttl_s: int = TOMBSTONE_TTL_S) -> None:
        self._clock = clock
        self._tombstone_ttl_s = tombstone_ttl_s
        self._lock = threading.Lock()  # one connection shared by the threads asyncio.to_thread uses
        self._db = open_sqlite(path, "device shadow store", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: atomic and crash-safe; fsync per checkpoint
        self._db.execute(_SCHEMA)

    def _now(self, now: int | None) -> int:
        return int(self._clock()) if now is None else now

    def _transaction(self, work: Callable[[], R]) -> R:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def _row(self, thing: str, name: str) -> tuple[int, str | None, int | None] | None:
        row: tuple[int, str | None, int | None] | None = self._db.execute(
            "SELECT version, document, deleted_at FROM shadows WHERE thing = ? AND name = ?", (thing, name)).fetchone()
        return row

    def update(self, thing: str, request: Any, shadow_name: str | None = None,
               now: int | None = None) -> UpdateResult:
        """Apply an /update request (creating the shadow if needed); raises ShadowError on rejection."""
        name, ts = shadow_name or "", self._now(now)

        def work() -> UpdateResult:
            row = self._row(thing, name)
            if row is not None and row[1] is not None:
                doc = ShadowDocument.from_json(row[1])
            elif row is not None and row[2] is not None and ts - row[2] < self._tombstone_ttl_s:
                doc = ShadowDocument.new(base_version=row[0])
            else:
                doc = ShadowDocument.new()
            result = doc.update(request, ts)
            self._db.execute(
                "INSERT INTO shadows (thing, name, version, document, deleted_at) VALUES (?, ?, ?, ?, NULL) "
                "ON CONFLICT (thing, name) DO UPDATE SET version = excluded.version, "
                "document = excluded.document, deleted_at = NULL",
                (thing, name, doc.version, doc.to_json()))
            return result

        return self._transaction(work)

    def get(self, thing: str, shadow_name: str | None = None) -> ShadowDocument | None:
        with self._lock:
            row = self._row(thing, shadow_name or "")
        return ShadowDocument.from_json(row[1]) if row is not None and row[1] is not None else None

    def delete(self, thing: str, shadow_name: str | None = None, request: Any = None,
               now: int | None = None) -> dict[str, Any]:
        """Delete the shadow; returns the /delete/accepted payload, raises ShadowError 404 if there is none."""
        name, ts = shadow_name or "", self._now(now)
        token = validate_client_token(request) if isinstance(request, dict) else None

        def work() -> dict[str, Any]:
            row = self._row(thing, name)
            if row is None or row[1] is None:
                raise ShadowError(404, f"No shadow exists with name: '{shadow_label(thing, shadow_name)}'")
            self._db.execute("UPDATE shadows SET document = NULL, deleted_at = ? WHERE thing = ? AND name = ?",
                             (ts, thing, name))
            body: dict[str, Any] = {"version": row[0], "timestamp": ts}
            if token is not None:
                body["clientToken"] = token
            return body

        return self._transaction(work)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ShadowStore":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
