"""Footfall aggregates in SQLite: per camera and per hour, visits, dwell (sum and histogram), and, unless
anonymous, unique / new / returning persons counted from salted hashes of person ids.

No I/O but the database, and no aiomqtt: `facewatchd stats` reads it with this module alone.

Tables (hour = the epoch second at which the UTC hour starts):
  meta      key → value: `salt` (absent when anonymous), `anonymous` ("1"/"0")
  hourly    (camera, hour) → visits, identified (visits with a person id), dwell_s (sum)
  dwell     (camera, hour, bin) → visits, bin = the lower edge in seconds of DWELL_BINS_S
  persons   person hash → when, at which camera and in which hour it was first seen (new vs returning)
  presence  (camera, hour, person hash): who was seen where, per hour, for unique counts over any range

Unique counts are not additive across hours, hence `presence`. A person id is kept only as
HMAC-SHA256(salt, id); the salt lives in this database, so the hashes are pseudonyms that only someone
who already holds a person id (and this file) can link back. `anonymous` keeps neither salt nor hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from facewatchd.state import StateError, open_sqlite

DWELL_BINS_S = (0, 5, 15, 30, 60, 300, 900)  # lower edges: <5 s, 5-15 s, ... 5-15 min, 15 min+
HOUR_S = 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hourly (camera TEXT NOT NULL, hour INTEGER NOT NULL, visits INTEGER NOT NULL,
    identified INTEGER NOT NULL, dwell_s REAL NOT NULL, PRIMARY KEY (camera, hour));
CREATE TABLE IF NOT EXISTS dwell (camera TEXT NOT NULL, hour INTEGER NOT NULL, bin INTEGER NOT NULL,
    visits INTEGER NOT NULL, PRIMARY KEY (camera, hour, bin));
CREATE TABLE IF NOT EXISTS persons (person TEXT PRIMARY KEY, first_at REAL NOT NULL, first_hour INTEGER NOT NULL,
    first_camera TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presence (camera TEXT NOT NULL, hour INTEGER NOT NULL, person TEXT NOT NULL,
    PRIMARY KEY (camera, hour, person));
"""


def hour_of(ts: float) -> int:
    return int(ts // HOUR_S) * HOUR_S


def dwell_bin(dwell_s: float) -> int:
    return max(edge for edge in DWELL_BINS_S if dwell_s >= edge) if dwell_s >= 0 else 0


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One row of the table: a (camera, hour), or a total over a range (camera "*" = all, hour None).
    unique/new/returning are None when the database counts anonymously."""

    camera: str
    hour: int | None
    visits: int
    identified: int
    dwell_s: float
    unique: int | None
    new: int | None

    @property
    def returning(self) -> int | None:
        return None if self.unique is None or self.new is None else self.unique - self.new

    @property
    def mean_dwell_s(self) -> float:
        return self.dwell_s / self.visits if self.visits else 0.0


class AnalyticsStore:
    """One connection, shared by the plugin's hook thread and its publisher (to_thread): a lock orders them."""

    def __init__(self, path: Path, anonymous: bool | None = False, *, read_only: bool = False) -> None:
        """`anonymous` None: keep the database's own mode (for readers)."""
        self.path = path
        self._lock = threading.Lock()
        if read_only:  # a reader (facewatchd stats) writes nothing: no schema, no salt, no mode change
            if not path.is_file():
                raise FileNotFoundError(path)
            self._db = open_sqlite(path, "analytics database", check_same_thread=False)
            self._db.execute("PRAGMA query_only = ON")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_sqlite(path, "analytics database", check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA secure_delete = ON")  # a deleted hash is overwritten, not left in a free page
            self._db.executescript(SCHEMA)
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StateError(f"{path}: not an analytics database ({e})") from None
        self.anonymous = meta.get("anonymous") == "1" if anonymous is None else anonymous
        self._salt = (meta.get("salt") or "").encode()
        if not read_only:
            self._set_mode()

    def _set_mode(self) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('anonymous', ?)", ("1" if self.anonymous else "0",))
            if self.anonymous:  # switched to anonymous: no identity may stay behind, not even a pseudonym
                db.execute("DELETE FROM persons")
                db.execute("DELETE FROM presence")
                db.execute("DELETE FROM meta WHERE key = 'salt'")
                self._salt = b""
            elif not self._salt:
                self._salt = secrets.token_hex(32).encode()
                db.execute("INSERT INTO meta VALUES ('salt', ?)", (self._salt.decode(),))
        if self.anonymous:  # the old pages stay in the main file until a checkpoint writes over them: now
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def pseudonym(self, person_id: str) -> str:
        return hmac.new(self._salt, person_id.encode(), hashlib.sha256).hexdigest()

    # -- writing --------------------------------------------------------------------------------
    def forget(self, person_id: str) -> None:
        """A person forgotten (by an operator or by retention) leaves no pseudonymous history behind."""
        if self.anonymous:
            return
        person = self.pseudonym(person_id)
        with self._transaction() as db:
            db.execute("DELETE FROM presence WHERE person = ?", (person,))
            db.execute("DELETE FROM persons WHERE person = ?", (person,))

    def record(self, camera: str, arrived_at: float, dwell_s: float, person_id: str | None) -> None:
        """One visit: it counts in the hour it began."""
        hour = hour_of(arrived_at)
        identified = person_id is not None and not self.anonymous
        with self._transaction() as db:
            db.execute("INSERT INTO hourly VALUES (?, ?, 1, ?, ?) ON CONFLICT (camera, hour) DO UPDATE SET "
                       "visits = visits + 1, identified = identified + excluded.identified, "
                       "dwell_s = dwell_s + excluded.dwell_s", (camera, hour, int(identified), dwell_s))
            db.execute("INSERT INTO dwell VALUES (?, ?, ?, 1) ON CONFLICT (camera, hour, bin) DO UPDATE SET "
                       "visits = visits + 1", (camera, hour, dwell_bin(dwell_s)))
            if identified:
                assert person_id is not None
                person = self.pseudonym(person_id)
                # first seen = the earliest arrival, even when a later visit's track ended first
                db.execute("INSERT INTO persons VALUES (?, ?, ?, ?) ON CONFLICT (person) DO UPDATE SET "
                           "first_at = excluded.first_at, first_hour = excluded.first_hour, "
                           "first_camera = excluded.first_camera WHERE excluded.first_at < persons.first_at",
                           (person, arrived_at, hour, camera))
                db.execute("INSERT OR IGNORE INTO presence VALUES (?, ?, ?)", (camera, hour, person))

    # -- reading --------------------------------------------------------------------------------
    def hours(self, since: float | None = None, camera: str | None = None) -> list[Aggregate]:
        """Per camera and hour, oldest first, from the hour that holds `since`."""
        start = hour_of(since) if since is not None else -math.inf
        with self._lock:
            rows = self._db.execute(
                "SELECT h.camera, h.hour, h.visits, h.identified, h.dwell_s, "
                "(SELECT COUNT(*) FROM presence p WHERE p.camera = h.camera AND p.hour = h.hour), "
                "(SELECT COUNT(*) FROM persons q WHERE q.first_camera = h.camera AND q.first_hour = h.hour) "
                "FROM hourly h WHERE h.hour >= ? AND (? IS NULL OR h.camera = ?) ORDER BY h.hour, h.camera",
                (start, camera, camera)).fetchall()
        return [Aggregate(c, h, v, i, d, None if self.anonymous else u, None if self.anonymous else n)
                for c, h, v, i, d, u, n in rows]

    def total(self, since: float | None = None, camera: str | None = None) -> Aggregate:
        """Over the range: unique persons once each however many hours they came; new = first seen ever in
        the range (on `camera`, if given); returning = the others."""
        start = hour_of(since) if since is not None else -math.inf
        args = (start, camera, camera)
        where = "hour >= ? AND (? IS NULL OR camera = ?)"
        with self._lock:
            visits, identified, dwell = self._db.execute(
                f"SELECT COALESCE(SUM(visits), 0), COALESCE(SUM(identified), 0), COALESCE(SUM(dwell_s), 0) "
                f"FROM hourly WHERE {where}", args).fetchone()
            unique = self._db.execute(f"SELECT COUNT(DISTINCT person) FROM presence WHERE {where}", args).fetchone()[0]
            new = self._db.execute("SELECT COUNT(*) FROM persons WHERE first_hour >= ? AND "
                                   "(? IS NULL OR first_camera = ?)", args).fetchone()[0]
        return Aggregate(camera or "*", None, visits, identified, dwell, None if self.anonymous else unique,
                         None if self.anonymous else new)

    def dwell_histogram(self, since: float | None = None, camera: str | None = None) -> dict[int, int]:
        """bin lower edge (s) → visits, every bin present."""
        start = hour_of(since) if since is not None else -math.inf
        with self._lock:
            rows = self._db.execute("SELECT bin, SUM(visits) FROM dwell WHERE hour >= ? AND (? IS NULL OR camera = ?) "
                                    "GROUP BY bin", (start, camera, camera)).fetchall()
        found = dict(rows)
        return {edge: int(found.get(edge, 0)) for edge in DWELL_BINS_S}


def prune(path: Path, before: float) -> int:
    """Retention: delete the hours that began before `before`, and the pseudonyms seen in none of the hours
    kept (they count as new if they come again). Returns the hourly rows deleted. Opens the file without
    touching its mode or salt, which belong to the plugin; blocking: call it from a worker thread."""
    if not path.is_file():
        return 0
    db = open_sqlite(path, "analytics database")
    try:
        db.execute("PRAGMA busy_timeout = 30000")  # the plugin writes too: wait for its lock
        db.execute("PRAGMA secure_delete = ON")  # a deleted pseudonym is overwritten, not left in a free page
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.execute("DELETE FROM hourly WHERE hour < ?", (before,)).rowcount
            db.execute("DELETE FROM dwell WHERE hour < ?", (before,))
            db.execute("DELETE FROM presence WHERE hour < ?", (before,))
            db.execute("DELETE FROM persons WHERE person NOT IN (SELECT person FROM presence)")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return deleted
    finally:
        db.close()
