"""Who may change a name: a password (hashed with scrypt), server-side sessions in a secure cookie, and
a CSRF token on every change, plus an Origin check so no other site can post a form here.

Naming a person is access control (an allowlisted name opens a door), so the page is closed by default:
without a configured password the web server does not start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # about 50 ms a check here: slows guessing, not people
COOKIE = "facewatchd_session"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$<salt>$<hash>` (base64), what `[web] password_hash` holds."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=len(expected), **SCRYPT)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def is_password_hash(stored: str) -> bool:
    """Whether `stored` is what hash_password makes (`scrypt$<salt>$<hash>`), not a password or a typo."""
    parts = stored.split("$")
    if len(parts) != 3 or parts[0] != "scrypt":
        return False
    try:
        return bool(base64.b64decode(parts[1], validate=True)) and bool(base64.b64decode(parts[2], validate=True))
    except ValueError:
        return False


def read_secret(path: Path) -> str:
    """A password hash from a file (a systemd credential, a secret mount): its first line. ValueError, naming
    the file, when it is missing, unreadable or empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"password_file {path}: cannot be read ({e.strerror if isinstance(e, OSError) else e})")
    if not lines or not lines[0].strip():
        raise ValueError(f"password_file {path}: is empty (its first line must be the password hash)")
    return lines[0].strip()


@dataclass
class Session:
    user: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Server-side sessions: the cookie holds only a random id, so nothing in it can be forged or read."""

    lifetime_s: float
    _by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str) -> str:
        self._expire()
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(user, secrets.token_urlsafe(32), time.monotonic() + self.lifetime_s)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None or session.expires < time.monotonic():
            return None
        return session

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._by_id.items() if v.expires < now]:
            del self._by_id[sid]
