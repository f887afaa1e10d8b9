"""The daemon's and the services' own state on disk: one owner at a time, private, and checked when
opened, so a damaged file is named with what to do instead of ending in a traceback.

- `StateDirLock`: an exclusive lock on the state directory (two daemons on one directory would both
  resolve the same faces and create duplicate persons); the second gets a clear error.
- `private_dir`: state directories are 0700 whatever the umask (faces are personal data); the commands
  that write state also set the umask to 077, so the files in them are 0600.
- `open_sqlite`: a connection whose file has been read once, so a truncated or corrupt file fails here
  with a `StateError` naming it. A cache can be rebuilt: `quarantine` moves it aside.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator

import structlog

log = structlog.get_logger("facewatchd.state")

PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077


class StateError(RuntimeError):
    """State that cannot be used as it is; str() names the file and says what to do."""


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


class StateDirLock:
    """`with StateDirLock(state_dir):` holds an exclusive lock on `<state_dir>/.<owner>.lock` (released when
    the process ends, however it ends, so a kill -9 leaves no stale lock). Owners: the daemon, the
    resolver service and the shadow service, which may share a data directory with each other."""

    def __init__(self, state_dir: Path, owner: str = "daemon") -> None:
        self.path = private_dir(state_dir) / f".{owner}.lock"
        self._fd: int | None = None

    def __enter__(self) -> "StateDirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateError(f"{self.path.parent}: already in use by facewatchd (pid {holder}); two daemons on one "
                             "state directory would resolve the same faces twice. Stop the other one, or give "
                             "this one its own [device] state_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def open_sqlite(path: Path | str, what: str, check_same_thread: bool = True) -> sqlite3.Connection:
    """Connect and read the file once (its header and schema), so a damaged file fails here, named."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=check_same_thread)
    except sqlite3.Error as e:
        raise StateError(f"{path}: cannot open the {what}: {e}") from None
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        bad = conn.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as e:
        conn.close()
        raise corrupt(path, what, str(e)) from None
    if bad and bad[0] != "ok":
        conn.close()
        raise corrupt(path, what, str(bad[0]))
    return conn


def corrupt(path: Path | str, what: str, detail: str) -> StateError:
    return StateError(f"{path}: the {what} is damaged ({detail}). Restore it from a backup, or move it aside "
                      "to start with an empty one (what it held is then lost)")


def quarantine(path: Path, reason: str) -> Path:
    """Move a damaged, rebuildable file (and its WAL files) aside: `<name>.corrupt-<time>`."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(Path(f"{target}{suffix}"))
    log.warning("state_quarantined", path=str(path), moved_to=str(target), reason=reason)
    return target


class ChangeLog:
    """Every change to who is who, with who made it: one JSON line each in `<dir>/changes.jsonl`, written
    by the review page and by the control socket alike."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "changes.jsonl"

    async def record(self, user: str, change: str, **detail: Any) -> dict[str, Any]:
        entry = {"ts": datetime.now(timezone.utc).isoformat(timespec="seconds"), "user": user, "change": change,
                 **detail}
        log.info("change", **entry)
        await asyncio.to_thread(append_line, self.path, json.dumps(entry) + "\n")
        return entry


@contextmanager
def _lines_lock(path: Path) -> Iterator[None]:
    # A lock file beside the log, not the log itself: a prune replaces the log, and an append waiting on
    # the old file's lock would then write into the replaced copy and be lost.
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append to a JSON-lines log (blocking: call it from a worker thread)."""
    with _lines_lock(path), path.open("a", encoding="utf-8") as f:
        f.write(line)


def prune_lines(path: Path, keep: Callable[[str], bool]) -> int:
    """Rewrite a JSON-lines log with only the lines `keep` accepts; returns how many were removed.
    Atomic (a crash leaves the old log or the new one) and safe against `append_line` meanwhile."""
    if not path.is_file():
        return 0
    with _lines_lock(path):
        # A damaged byte must not stop retention for good: kept lines are written back as read.
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
        kept = [line for line in lines if keep(line)]
        if len(kept) < len(lines):
            tmp = path.with_name(f"{path.name}.tmp")
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as out:
                out.write("".join(kept))
                out.flush()
                os.fsync(out.fileno())  # on a device a power cut must leave the old log or the new, never a short one
            shutil.copymode(path, tmp)
            os.replace(tmp, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return len(lines) - len(kept)


def required_text(value: object, key: str) -> str:
    """A name or an id from a form or a request: 1 to 128 characters once trimmed."""
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > 128:
        raise ValueError(f"{key}: 1 to 128 characters")
    return text
