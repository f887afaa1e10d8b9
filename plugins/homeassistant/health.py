"""Diagnostic sensors from the daemon's health line (the `camera_health` hook): on each camera's device, frames
in and processed per second, the share dropped, the detector's and embedder's time; on the hub, the outbox's
depth (the hub's *Resolver link* already says the link's state). Each camera's figures go out as one retained
JSON state per interval; the configs join the plugin's wanted configs, so a reconcile keeps them."""

from __future__ import annotations

from typing import Any

from facewatchd.hookspecs import hookimpl
from facewatchd.pipeline.health import CameraHealth
from plugins.homeassistant.discovery import slug
from plugins.homeassistant.reconcile import Reconciling

# the figure's key in the state, the entity's name, its unit, its icon, how its value is read from the JSON
CAMERA_SENSORS = [
    ("fps_in", "Frames in", "fps", "mdi:video-input-component", "value_json.fps_in"),
    ("fps_out", "Frames processed", "fps", "mdi:video-check", "value_json.fps_out"),
    ("drop_rate", "Frames dropped", "%", "mdi:video-off", "(value_json.drop_rate * 100) | round(1)"),
    ("detect_ms", "Detector time", "ms", "mdi:timer-outline", "value_json.detect_ms"),
    ("embed_ms", "Embedder time", "ms", "mdi:timer-outline", "value_json.embed_ms"),
]


def template(read: str) -> str:
    """The empty message that clears a retained state (a camera removed) has no JSON, and a figure of an interval
    without detections or embeddings is null: both render None, which HA shows as unknown."""
    return f"{{{{ {read} if value_json is defined else None }}}}"


class HealthSensors(Reconciling):
    def health_topic(self, camera: str) -> str:
        return self.camera_topic(camera, "health")

    @property
    def outbox_topic(self) -> str:
        return f"{self.base}/outbox"

    def health_configs(self) -> dict[str, dict[str, Any] | None]:
        configs: dict[str, dict[str, Any] | None] = {
            self.config_topic("sensor", "outbox"): self._entity(
                f"{self.node}_outbox", "Outbox", self.hub_device(), entity_category="diagnostic",
                state_class="measurement", icon="mdi:tray-full", unit_of_measurement="requests",
                state_topic=self.outbox_topic)}
        for camera in self.cameras:
            device, cid = self.camera_device(camera), f"{self.node}_{slug(camera)}"
            for key, name, unit, icon, read in CAMERA_SENSORS:
                configs[self.config_topic("sensor", f"{slug(camera)}_health_{key}")] = self._entity(
                    f"{cid}_health_{key}", name, device, entity_category="diagnostic", state_class="measurement",
                    icon=icon, unit_of_measurement=unit, state_topic=self.health_topic(camera),
                    value_template=template(read))
        return configs

    def wanted_configs(self) -> dict[str, dict[str, Any] | None]:
        return super().wanted_configs() | self.health_configs()

    @hookimpl
    async def camera_health(self, health: CameraHealth) -> None:
        if health.camera not in self.cameras:
            return  # a camera this run's config does not have: no device to put it on
        state = {"fps_in": health.fps_in, "fps_out": health.fps_out, "drop_rate": health.drop_rate,
                 "dropped": health.dropped, "detect_ms": health.detect_ms, "embed_ms": health.embed_ms,
                 "interval_s": health.interval_s}
        await self._send([self._publish(self.health_topic(health.camera), state, retain=True),
                          self._publish(self.outbox_topic, str(health.outbox), retain=True)])
