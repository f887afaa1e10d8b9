"""Where the door plugin keeps its audit log and its attack crops: the review page shows both, without
importing the plugin (the core never imports an integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def door_audit_path(config: Any) -> Path | None:
    """The door plugin's audit log, when the door plugin is configured."""
    door = config.plugins.get("door")
    if door is None:
        return None
    return Path(door["audit_log"]) if door.get("audit_log") else config.device.state_dir / "door-audit.jsonl"


def door_attack_crop(audit_log: Path, name: str) -> Path | None:
    """A crop the door plugin kept of a presentation attack: `door-attacks/<hex>.jpg` beside its audit log
    (plugins/door: attack_crops_dir); None for any other name, so no path can leave that folder."""
    if len(name) != 36 or not name.endswith(".jpg") or any(c not in "0123456789abcdef" for c in name[:32]):
        return None
    return audit_log.parent / "door-attacks" / name
