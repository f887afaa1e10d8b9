"""What the page says after a change: a message on the next page (the change's, or an error next to the form
it came from) and, for a short while, an undo. In memory in the web server object, per session, bounded:
an undo is a convenience, never a record (`changes.jsonl` is)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

UNDO_S = 300.0  # five minutes: long enough to see a mistake, short enough that the page it undoes is current
UNDO_PER_SESSION = 10
SESSIONS = 1_000


@dataclass(frozen=True)
class Done:
    """A change made: what the change log records, where the page goes, what it says, and how to undo it."""

    what: str
    detail: dict[str, Any]
    back: str
    message: str
    undo: Callable[[], Awaitable["Done"]] | None = None
    merges: tuple[tuple[str, str, str, str], ...] = ()  # (keep, gone, gone as shown, a face of gone) to offer


@dataclass(frozen=True)
class Undo:
    token: str
    run: Callable[[], Awaitable[Done]]
    expires: float


@dataclass(frozen=True)
class Flash:
    message: str
    undo: str = ""  # the token of the undo it offers
    error: bool = False
    form: str = ""  # an error's form, the one it is shown next to
    value: str = ""  # what was typed there, filled in again
    merge: tuple[str, str, str] | None = None  # a name held by another person: (keep, its name, gone) to offer
    merges: tuple[tuple[str, str, str, str], ...] = ()  # after a change: likely the same persons, to merge


@dataclass
class Flashes:
    _next: "OrderedDict[str, Flash]" = field(default_factory=OrderedDict)  # session → its next page's message
    _undo: "OrderedDict[str, OrderedDict[str, Undo]]" = field(default_factory=OrderedDict)

    def put(self, session: str, flash: Flash) -> None:
        _bounded(self._next, session, flash)

    def take(self, session: str) -> Flash | None:
        return self._next.pop(session, None)

    def offer(self, session: str, run: Callable[[], Awaitable[Done]]) -> str:
        undos = self._undo.get(session) or OrderedDict()
        token = secrets.token_urlsafe(16)
        _bounded(undos, token, Undo(token, run, time.monotonic() + UNDO_S), UNDO_PER_SESSION)
        _bounded(self._undo, session, undos)
        return token

    def claim(self, session: str, token: str) -> Undo | None:
        """The undo, once (a second click does nothing), while it lasts; only the session's own."""
        undo = self._undo.get(session, OrderedDict()).pop(token, None)
        return undo if undo is not None and undo.expires > time.monotonic() else None


def _bounded(store: "OrderedDict[str, Any]", key: str, value: Any, most: int = SESSIONS) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > most:
        store.popitem(last=False)
