"""What the pages, the actions and the request checks need of the server that holds them. A protocol here,
so they depend on it and the server on them, not on each other in a circle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from facewatchd.resolver.core import Resolver
    from facewatchd.resolver.ports import CropStore, NameDirectory
    from facewatchd.state import ChangeLog
    from facewatchd.web.auth import Sessions
    from facewatchd.web.live import Live


class HostCheck(Protocol):
    def allow(self, host: str) -> bool: ...


class Site(Protocol):
    resolver: "Resolver"
    names: "NameDirectory"
    crops: "CropStore"
    live: "Live | None"
    door_audit: Path | None
    hosts: HostCheck
    sessions: "Sessions"
    changes: "ChangeLog"
    session_key: Any  # aiohttp's typed request key for the session, made with the app

    def render(self, name: str, request: Any, context: dict[str, Any], status: int = 200) -> Any: ...
