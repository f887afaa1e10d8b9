"""`facewatchd run --review`: the first hour. File cameras play on until Ctrl-C, and the review page is
served, so a new user names faces on the page while the daemon keeps recognising them.

The page needs a password: unless `[web]` already has one, its hash is kept in `<state_dir>/web-password`
(mode 0600), asked for (twice) on the terminal the first time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from facewatchd.app.config import Config, parse_config
from facewatchd.config import ConfigError
from facewatchd.web.auth import hash_password
from facewatchd.web.password import PasswordRefused, ask_new_password

PASSWORD_FILE = "web-password"


def review_config(config: Config, raw: dict[str, Any]) -> Config:
    """`config` (parsed from `raw`) with its file cameras looping and the review page on."""
    data = {**raw, "cameras": [{**camera, "loop": True} for camera in raw.get("cameras", [])]}
    if not config.web.enabled:
        secret = config.device.state_dir / PASSWORD_FILE
        if not secret.is_file() or not secret.read_text().strip():
            _ask_password(secret)
        data["web"] = {**raw.get("web", {}), "password_file": str(secret)}
    return parse_config(data, config.source)


def _ask_password(secret: Path) -> None:
    if not sys.stdin.isatty():
        raise ConfigError(f"the review page needs a password: run this on a terminal once, or put a hash from "
                          f"`facewatchd web-password --hash-only` in {secret}")
    try:
        password = ask_new_password("a password for the review page (user admin): ")
    except PasswordRefused as e:
        raise ConfigError(f"the review page needs a password: {e}") from None
    secret.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hash_password(password) + "\n")
