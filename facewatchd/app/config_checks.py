"""What the schema cannot judge: the files a config names, the camera ids it refers to, and a review page
served beyond this machine in clear. `facewatchd check-config` runs these after the schema and every plugin's
table have passed, and `facewatchd run` runs them before it starts anything, with the same messages.

An error is what would fail at run time (a camera file that is not there, a TLS file that cannot be read);
a warning is what runs, but not as meant (an id no camera has is ignored). Every check but the files' is
pure: it looks only at the config.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel

from facewatchd.app.config import Config
from facewatchd.config import ConfigError
from facewatchd.pipeline.camera import IMAGE_SUFFIXES, is_live

# Keys naming a TLS file (a CA, a certificate, a private key), wherever they are: [link], [server], [web] and
# each plugin's broker keys. A file that cannot be read fails the connection or the server at start.
TLS_FILE_KEYS = frozenset({"ca_file", "cert_file", "key_file", "tls_cert_file", "tls_key_file",
                           "shadow_cert_file", "shadow_key_file"})


@dataclass
class Findings:
    """Each line is `key.path: what is wrong`, as the schema's errors are."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_config(config: Config, plugin_configs: Mapping[str, BaseModel]) -> Findings:
    found = Findings()
    found.errors += camera_source_problems(config)
    found.errors += tls_file_problems(config, plugin_configs)
    found.warnings += unknown_camera_ids(config, plugin_configs)
    found.warnings += web_in_clear(config)
    return found


def enforce(config: Config, plugin_configs: Mapping[str, BaseModel]) -> list[str]:
    """The warnings, each naming the file; a ConfigError with every error when there are any."""
    where = f"{config.source}: " if config.source else ""
    found = check_config(config, plugin_configs)
    if found.errors:
        raise ConfigError("\n".join(where + line for line in found.errors))
    return [where + line for line in found.warnings]


def camera_source_problems(config: Config) -> list[str]:
    """A file or image folder that is not there (or holds no image). Devices and URLs are not files: a live
    source that is down is retried at run time."""
    problems = []
    for i, camera in enumerate(config.cameras):
        if is_live(camera.source):
            continue
        path = Path(str(camera.source))
        if not path.exists():
            problem = f"no such file or directory: {path}{_relative_to_cwd(path)}"
        elif path.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            problem = f"no images in {path}"
        elif not os.access(path, os.R_OK):
            problem = f"cannot be read: {path}"
        else:
            continue
        problems.append(f"cameras[{i}].source: {problem}")
    return problems


def tls_file_problems(config: Config, plugin_configs: Mapping[str, BaseModel]) -> list[str]:
    """TLS files that are missing or unreadable (by this user: under systemd, the service's own)."""
    sections: list[tuple[str, Any]] = [("link", config.link), ("server", config.server)]
    if config.web.enabled:  # without a password there is no page, and its TLS files are not opened
        sections.append(("web", config.web))
    sections += [(f"plugins.{name}", section) for name, section in sorted(plugin_configs.items())]
    problems = []
    for prefix, section in sections:
        for key, path in _tls_files(section, prefix):
            if not path.is_file():
                problems.append(f"{key}: no such file: {path}{_relative_to_cwd(path)}")
            elif not os.access(path, os.R_OK):
                problems.append(f"{key}: cannot be read by this user: {path}")
    return problems


def unknown_camera_ids(config: Config, plugin_configs: Mapping[str, BaseModel]) -> list[str]:
    """Camera ids in other sections that no [[cameras]] table has: they are silently ignored at run time."""
    ids = [c.id for c in config.cameras]
    known = ", ".join(ids) or "none"
    refs: list[tuple[str, Any]] = [("liveness.cameras", config.liveness.cameras)]
    refs += [(f"plugins.{name}.cameras", getattr(section, "cameras", None))
             for name, section in sorted(plugin_configs.items())]
    warnings = []
    for key, value in refs:
        # a list of ids, or a table keyed by id (homeassistant's)
        named = [(f"{key}.{k}", k) for k in value] if isinstance(value, dict) else \
            [(f"{key}[{i}]", k) for i, k in enumerate(value or ())]
        warnings += [f"{where}: no camera has the id {camera!r} (camera ids: {known}); it is ignored"
                     for where, camera in named if isinstance(camera, str) and camera not in ids]
    return warnings


def web_in_clear(config: Config) -> list[str]:
    web = config.web
    if not web.enabled or web.tls_cert_file or _is_loopback(web.host):
        return []
    return [f"web.host: {web.host!r} serves the review page beyond this machine without TLS, so its password and "
            "session cross the network in clear: set tls_cert_file and tls_key_file, or keep host = \"127.0.0.1\" "
            "behind a TLS proxy"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or "" (every address)


def _tls_files(value: Any, key: str) -> Iterator[tuple[str, Path]]:
    """(key path, file) for every TLS file key set in a section, its sub-tables and lists."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            item = getattr(value, name)
            if name in TLS_FILE_KEYS and isinstance(item, Path):
                yield f"{key}.{name}", item
            else:
                yield from _tls_files(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tls_files(item, f"{key}[{i}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _tls_files(item, f"{key}.{name}")


def _relative_to_cwd(path: Path) -> str:
    # under systemd the working directory is the state directory, not where the config lives
    return "" if path.is_absolute() else f" (relative to the working directory, {Path.cwd()})"
