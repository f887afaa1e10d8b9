"""A durable at-least-once queue (SQLite) for unknown-face requests.

A request is written here before it is sent and removed only when the resolver's answer arrives, so
nothing is lost offline, on timeout or on kill -9. Bounded on disk: past `max_rows` the oldest are
dropped and counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from facewatchd.state import open_sqlite


@dataclass(frozen=True, slots=True)
class OutboxItem:
    face_id: str
    payload: bytes
    attempts: int
    created: float


class Outbox:
    def __init__(self, path: Path | str, max_rows: int = 10_000) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.dropped = 0
        # Never rebuilt silently: its rows are faces still waiting for an answer.
        self._db = open_sqlite(path, "outbox of unanswered faces")
        self._db.executescript("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
            CREATE TABLE IF NOT EXISTS outbox (
                face_id TEXT PRIMARY KEY, payload BLOB NOT NULL, created REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL
            );
        """)

    def put(self, face_id: str, payload: bytes, now: float | None = None) -> list[str]:
        """Store a request (due at once); returns the face ids of old ones dropped to stay bounded."""
        now = now or time.time()
        self._db.execute("INSERT OR IGNORE INTO outbox VALUES (?,?,?,0,?)", (face_id, payload, now, now))
        excess = len(self) - self.max_rows
        if excess <= 0:
            return []
        dropped = [r[0] for r in self._db.execute("SELECT face_id FROM outbox ORDER BY created LIMIT ?", (excess,))]
        self._db.executemany("DELETE FROM outbox WHERE face_id = ?", [(f,) for f in dropped])
        self.dropped += len(dropped)
        return dropped

    def face_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT face_id FROM outbox")}

    def make_all_due(self, now: float | None = None) -> None:
        self._db.execute("UPDATE outbox SET next_attempt = ?", (now or time.time(),))

    def due(self, now: float | None = None, limit: int = 32) -> list[OutboxItem]:
        now = now or time.time()
        rows = self._db.execute("SELECT face_id, payload, attempts, created FROM outbox WHERE next_attempt <= ? "
                                "ORDER BY next_attempt LIMIT ?", (now, limit))
        return [OutboxItem(*r) for r in rows]

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(next_attempt) FROM outbox").fetchone()
        return row[0] if row else None

    def attempted(self, face_id: str, next_attempt: float) -> None:
        self._db.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt = ? WHERE face_id = ?",
                         (next_attempt, face_id))

    def postpone(self, face_id: str, next_attempt: float) -> None:
        self._db.execute("UPDATE outbox SET next_attempt = ? WHERE face_id = ?", (next_attempt, face_id))

    def remove(self, face_id: str) -> bool:
        return self._db.execute("DELETE FROM outbox WHERE face_id = ?", (face_id,)).rowcount > 0

    def __contains__(self, face_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM outbox WHERE face_id = ?", (face_id,)).fetchone() is not None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        self._db.close()
