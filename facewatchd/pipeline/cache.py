"""The face cache: embeddings of recently identified faces, so a known face costs no resolver call.

Each entry is one view of one face: an L2-normalised SFace embedding with its person id and name, or,
while the resolver has not answered yet, the pending face id it was sent under (so a second track of
the same new person joins the pending query instead of sending another). Matching a new track is one
matrix product over all entries, decided by `facewatchd.identity` (the naming threshold rises with the
number of views compared: each is one more chance of a false match). Several views per person are kept so a new angle still matches.

Every view carries its *trust*: the similarity at which it was verified as its person (the resolver's
answer for a view it sent, the verification for a view learnt later). Evidence that a face is a person
is never stronger than the view it matched: min(similarity to the view, the view's trust).

Entries are evicted least-recently-seen first, bounded by count and by age; the cache persists in
SQLite so a restart costs no resolver calls.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.identity import IdentityConfig
from facewatchd.state import StateError, open_sqlite, quarantine
from facewatchd.vision.embedding import EMBEDDING_DIM

log = structlog.get_logger("facewatchd.cache")


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(10_000, ge=1, le=10_000_000)
    max_age_days: float = Field(30.0, gt=0, description="entries not seen for this long are evicted")
    views_per_person: int = Field(5, ge=1, le=100)
    new_view_below: float = Field(0.7, gt=0, le=1,
                                  description="a view less similar than this to every cached view is kept too")


@dataclass(slots=True)
class Entry:
    id: str
    person_id: str | None
    name: str | None
    face_id: str | None  # the query this view was sent under; None for views added later
    created: float
    last_seen: float
    trust: float = 0.0  # the similarity at which this view was verified as its person; 0 while pending
    origin: str | None = None  # the face id this view rests on: its own query, or the view it was learnt from

    @property
    def pending(self) -> bool:
        return self.person_id is None

    @property
    def identity(self) -> str:
        """Who this view is: its person, or its pending query (a new person the resolver has not named)."""
        return self.person_id or f"pending:{self.face_id}"


@dataclass(frozen=True, slots=True)
class CacheHit:
    entry: Entry
    similarity: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY, person_id TEXT, name TEXT, face_id TEXT,
    embedding BLOB NOT NULL, created REAL NOT NULL, last_seen REAL NOT NULL, trust REAL NOT NULL, origin TEXT
);
CREATE INDEX IF NOT EXISTS entries_origin ON entries(origin);
CREATE INDEX IF NOT EXISTS entries_face ON entries(face_id);
"""


class FaceCache:
    def __init__(self, path: Path | str, config: CacheConfig | None = None,
                 identity: IdentityConfig | None = None) -> None:
        self.config = config or CacheConfig()
        self.identity = identity or IdentityConfig()
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open(path)
        except (StateError, sqlite3.DatabaseError) as e:
            if str(path) == ":memory:":
                raise
            # A cache is only a cache: move the damaged file aside and start empty (each person then costs
            # one resolver call again), rather than keep the daemon from starting.
            half_open = getattr(self, "_db", None)
            if half_open is not None:
                half_open.close()
            quarantine(Path(path), str(e))
            self._open(path)

    def _open(self, path: Path | str) -> None:
        self._db = open_sqlite(path, "face cache")
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(entries)")}
        if columns and not {"trust", "origin"} <= columns:
            # Views from before trust was kept may have been learnt from unverified tracks: a cache is only
            # a cache, so it starts again (each person costs one resolver call) rather than keep them.
            self._db.execute("DROP TABLE entries")
            log.warning("cache_rebuilt", reason="views without verification trust were dropped")
        self._db.executescript(_SCHEMA)
        # Rows [0, n) of the matrix are live; entries[i] describes row i. Deletion swaps in the last row.
        self._matrix = np.zeros((64, EMBEDDING_DIM), np.float32)
        self._entries: list[Entry] = []
        self._row: dict[str, int] = {}
        for row in self._db.execute(
                "SELECT id, person_id, name, face_id, created, last_seen, trust, origin, embedding FROM entries"):
            emb = np.frombuffer(row[8], np.float32)
            if emb.shape != (EMBEDDING_DIM,):
                continue  # written by another model: useless here, dropped at the next eviction
            self._append(Entry(*row[:8]), emb)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._db.close()

    # -- matching -------------------------------------------------------------------------------
    def match(self, embedding: np.ndarray, not_persons: Collection[str] = (),
              not_faces: Collection[str] = ()) -> CacheHit | None:
        """The most similar entry, if it names the face (identity.decide over the persons and pending faces
        cached), or None. Entries of `not_persons`, or sent under a face id in `not_faces`, are skipped:
        they are people seen in the same frame."""
        n = len(self._entries)
        if n == 0:
            return None
        sims = self._matrix[:n] @ embedding
        threshold = self.identity.naming_threshold(n)  # every view is one more chance of a false match
        if not not_persons and not not_faces:
            i = int(np.argmax(sims))
            return CacheHit(self._entries[i], float(sims[i])) if sims[i] >= threshold else None
        candidates = np.flatnonzero(sims >= threshold)
        for i in candidates[np.argsort(-sims[candidates])]:
            e = self._entries[i]
            if e.person_id not in not_persons and e.face_id not in not_faces:
                return CacheHit(e, float(sims[i]))
        return None

    def similarity(self, identity: str, embedding: np.ndarray) -> tuple[float, float]:
        """(similarity, evidence) of a face to a person or pending face (`Entry.identity`): the best cosine
        to its views, and the best min(cosine, trust), what the face proves. (-1, -1) with no views."""
        similarity, evidence, _ = self._compare(identity, embedding)
        return similarity, evidence

    def _compare(self, identity: str, embedding: np.ndarray) -> tuple[float, float, Entry | None]:
        rows = [i for i, e in enumerate(self._entries) if e.identity == identity]
        if not rows:
            return -1.0, -1.0, None
        sims = self._matrix[rows] @ embedding
        proven = np.minimum(sims, np.array([self._entries[i].trust for i in rows], np.float32))
        strongest = int(np.argmax(proven))
        return float(np.max(sims)), float(proven[strongest]), self._entries[rows[strongest]]

    def comparisons(self) -> int:
        """Views a face is compared with in one search: what the naming threshold rises with."""
        return len(self._entries)

    # -- changes --------------------------------------------------------------------------------
    def add_pending(self, face_id: str, embedding: np.ndarray, now: float | None = None) -> Entry:
        now = now or time.time()
        return self._insert(Entry(uuid.uuid4().hex, None, None, face_id, now, now, 0.0, face_id), embedding)

    def add_view(self, person_id: str, name: str | None, embedding: np.ndarray, now: float | None = None) -> bool:
        """Learn a new angle of a known person: only a view that verifies against the person's views at
        `identity.learn_threshold` (as evidence: trust included), and that differs enough from them to be
        worth keeping. A person with no views left was forgotten or evicted: not brought back from a
        track that was already running."""
        best, evidence, source = self._compare(person_id, embedding)
        if source is None or not self.worth_learning(best, evidence):
            return False
        now = now or time.time()
        origin = source.origin or source.face_id
        self._insert(Entry(uuid.uuid4().hex, person_id, name, None, now, now, evidence, origin), embedding)
        self._trim_views(person_id)
        return True

    def resolve(self, face_id: str, person_id: str, name: str | None, similarity: float = 1.0) -> list[Entry]:
        """The resolver named a face at `similarity` (1.0 for a new person, or a face an operator moved):
        its views, and those learnt from it, now belong to the person, trusted as far as that answer goes."""
        entries = [e for e in self._entries if e.face_id == face_id or e.origin == face_id]
        trust = max(0.0, min(1.0, similarity))
        for e in entries:
            e.person_id, e.name = person_id, name
            e.trust = trust if e.face_id == face_id else min(e.trust, trust)  # a learnt view: never above its source
        if entries:
            self._db.execute("UPDATE entries SET person_id=?, name=?, trust=MIN(trust, ?) "
                             "WHERE origin=? AND face_id IS NULL", (person_id, name, trust, face_id))
            self._db.execute("UPDATE entries SET person_id=?, name=?, trust=? WHERE face_id=?",
                             (person_id, name, trust, face_id))
            self.rename(person_id, name)  # the resolver's answer carries the person's current name
            self._trim_views(person_id)
        return entries

    def worth_learning(self, similarity: float, evidence: float) -> bool:
        """A view (best `similarity` to its person's views, `evidence` with their trust) that add_view would
        keep: it verifies at the learning threshold and is a new enough angle."""
        return evidence >= self.identity.learn_threshold and similarity < self.config.new_view_below

    def rename(self, person_id: str, name: str | None) -> int:
        changed = [e for e in self._entries if e.person_id == person_id]
        for e in changed:
            e.name = name
        self._db.execute("UPDATE entries SET name=? WHERE person_id=?", (name, person_id))
        return len(changed)

    def forget(self, person_id: str) -> int:
        ids = [e.id for e in self._entries if e.person_id == person_id]
        self._delete(ids)
        return len(ids)

    def reject(self, face_id: str) -> int:
        """"Not this person": drop the view sent under `face_id` and every view learnt from it."""
        ids = [e.id for e in self._entries if e.face_id == face_id or e.origin == face_id]
        self._delete(ids)
        return len(ids)

    def merge(self, gone: str, keep: str, name: str | None) -> int:
        """Person `gone` was `keep`: its views become keep's, under keep's name."""
        moved = [e for e in self._entries if e.person_id == gone]
        for e in moved:
            e.person_id, e.name = keep, name
        self._db.execute("UPDATE entries SET person_id=?, name=? WHERE person_id=?", (keep, name, gone))
        self.rename(keep, name)
        self._trim_views(keep)
        return len(moved)

    def touch(self, entry: Entry, now: float | None = None) -> None:
        """Mark a person (or a pending face) as seen now: all its views stay warm together."""
        now = now or time.time()
        key, value = ("person_id", entry.person_id) if entry.person_id else ("face_id", entry.face_id)
        for e in self._entries:
            if getattr(e, key) == value:
                e.last_seen = now
        self._db.execute(f"UPDATE entries SET last_seen=? WHERE {key}=?", (now, value))

    def evict(self, now: float | None = None) -> int:
        """Drop entries older than max_age, then the least recently seen beyond max_entries."""
        now = now or time.time()
        cutoff = now - self.config.max_age_days * 86400
        doomed = [e.id for e in self._entries if e.last_seen < cutoff]
        excess = len(self._entries) - len(doomed) - self.config.max_entries
        if excess > 0:
            keep = sorted((e for e in self._entries if e.last_seen >= cutoff), key=lambda e: e.last_seen)
            doomed += [e.id for e in keep[:excess]]
        self._delete(doomed)
        return len(doomed)

    def pending_faces(self) -> set[str]:
        return {e.face_id for e in self._entries if e.pending and e.face_id}

    def drop_face(self, face_id: str) -> int:
        """Remove the pending views of a query that will never be answered."""
        ids = [e.id for e in self._entries if e.face_id == face_id and e.pending]
        self._delete(ids)
        return len(ids)

    def persons(self) -> dict[str, str | None]:
        return {e.person_id: e.name for e in self._entries if e.person_id}

    def entries(self) -> list[Entry]:
        return list(self._entries)

    # -- storage --------------------------------------------------------------------------------
    def _trim_views(self, person_id: str) -> None:
        # Learnt views go first, oldest first: a view the resolver answered (face_id set) is the one the
        # others were verified against, and the resolver's own template of the face.
        views = sorted((e for e in self._entries if e.person_id == person_id),
                       key=lambda e: (e.face_id is not None, e.created))
        excess = len(views) - self.config.views_per_person
        if excess > 0:
            self._delete([e.id for e in views[:excess]])

    def _insert(self, entry: Entry, embedding: np.ndarray) -> Entry:
        emb = np.asarray(embedding, np.float32).reshape(EMBEDDING_DIM)
        self._db.execute("INSERT INTO entries (id, person_id, name, face_id, embedding, created, last_seen, trust, "
                         "origin) VALUES (?,?,?,?,?,?,?,?,?)",
                         (entry.id, entry.person_id, entry.name, entry.face_id, emb.tobytes(), entry.created,
                          entry.last_seen, entry.trust, entry.origin))
        self._append(entry, emb)
        if len(self._entries) > self.config.max_entries:
            self.evict(entry.last_seen)
        return entry

    def _append(self, entry: Entry, emb: np.ndarray) -> None:
        n = len(self._entries)
        if n == len(self._matrix):
            self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
        self._matrix[n] = emb
        self._entries.append(entry)
        self._row[entry.id] = n

    def _delete(self, ids: list[str]) -> None:
        if not ids:
            return
        self._db.execute("BEGIN")
        self._db.executemany("DELETE FROM entries WHERE id=?", [(i,) for i in ids])
        self._db.execute("COMMIT")
        for entry_id in ids:
            i = self._row.pop(entry_id)
            last = len(self._entries) - 1
            if i != last:
                moved = self._entries[last]
                self._entries[i] = moved
                self._matrix[i] = self._matrix[last]
                self._row[moved.id] = i
            self._entries.pop()
