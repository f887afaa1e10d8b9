"""What `facewatchd plugins list` shows: every built-in that can be turned on (one line of what it does, its
config section, whether this config enables it), then every plugin loaded, built-in or installed."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from facewatchd.plugins import PluginHost, builtin_manifest, builtin_plugin_names


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    origin: str  # "builtin" or the distribution that provides the entry point
    enabled: bool
    section: str
    summary: str
    module: str
    version: str | None
    hooks: list[str] = field(default_factory=list)  # those it implements; known once loaded


def summary(manifest: dict[str, Any]) -> str:
    """The manifest's one-line `summary`, else its description up to the first ':' or ';' (then the detail)."""
    if manifest.get("summary"):
        return str(manifest["summary"])
    return re.split(r"[:;] ", str(manifest.get("description", "")), maxsplit=1)[0].strip()


def catalog(host: PluginHost) -> list[CatalogEntry]:
    """Built-ins first (on or off), then the loaded plugins from elsewhere, each by name."""
    entries = []
    for name in builtin_plugin_names():
        loaded = host.infos.get(name)
        manifest = loaded.manifest if loaded else builtin_manifest(name)
        entries.append(CatalogEntry(name, "builtin", loaded is not None, f"[plugins.{name}]",
                                    summary(manifest), f"plugins.{name}",
                                    manifest.get("version"), loaded.hooks if loaded else []))
    for name, info in sorted(host.infos.items()):
        if name in builtin_plugin_names() or info.origin == "builtin":  # (the review page's own "now" is no plugin to list)
            continue
        entries.append(CatalogEntry(name, info.origin, True, f"[plugins.{name}]",
                                    summary(info.manifest), info.module,
                                    info.manifest.get("version"), info.hooks))
    return entries


def as_json(entries: list[CatalogEntry]) -> list[dict[str, Any]]:
    return [asdict(e) for e in entries]


def as_text(entries: list[CatalogEntry]) -> str:
    builtins = [e for e in entries if e.origin == "builtin"]
    width = max((len(e.section) for e in entries), default=0)
    lines = ["built-in plugins (a [plugins.<name>] section turns one on; enabled = false in it turns it off):"]
    lines += [f"  {'on ' if e.enabled else 'off'}  {e.section:<{width}}  {e.summary}" for e in builtins]
    loaded = [e for e in entries if e.enabled]
    if loaded:
        lines.append("loaded, and the hooks each implements:")
        lines += [f"  {e.name:<16} {e.origin:<12} {e.module:<28} {', '.join(e.hooks)}" for e in loaded]
    else:
        lines.append("no plugin is enabled in this config")
    return "\n".join(lines)
