"""What the door writes down: the audit log's timestamps and error texts, and the face crops of attacks."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from facewatchd.state import private_dir


def attack_crops_dir(audit_path: Path) -> Path:
    """Where the crops of presentation attacks are kept, beside the audit log."""
    return audit_path.parent / "door-attacks"


def write_crop(path: Path, jpeg: bytes) -> None:
    private_dir(path.parent)  # faces are personal data: the owner's only
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(jpeg)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
