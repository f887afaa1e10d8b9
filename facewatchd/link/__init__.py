"""Links: how a device reaches the resolver and its shadow. One file per kind, its config beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from facewatchd.link.base import Link


def create_link(thing: str, config: Any, state_dir: Path, mqtt: Callable[[], Any] | None = None) -> Link:
    """Build the network link its config's `type` names (the embedded `local` link is built by the daemon).
    `mqtt` gives the device's MQTT connections, which an MQTT link shares with the plugins."""
    if config.type == "mqtt":
        from facewatchd.link.mqtt import MqttLink

        return MqttLink(thing, config, mqtt() if mqtt else None)
    if config.type == "awsiot":
        from facewatchd.link.awsiot import AwsIotLink

        return AwsIotLink(thing, config)
    if config.type == "greengrass":
        from facewatchd.link.greengrass import GreengrassLink

        return GreengrassLink(thing, config)
    raise ValueError(f"unknown link type {config.type!r}")
