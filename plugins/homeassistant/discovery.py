"""What Home Assistant reads to make the entities: the topics of this thing's hub, cameras and persons,
and their discovery configs. No I/O: the plugin publishes them."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from facewatchd import __version__
from facewatchd.link.base import availability_topic
from plugins.homeassistant.config import CameraOptions, HomeAssistantConfig

ORIGIN = {"name": "facewatchd", "sw_version": __version__}
# the empty message that clears a retained state (a forget, a removal) may reach the entity before its removal
# does: no attributes, rather than a warning about JSON in HA's log
NO_ATTRIBUTES_WHEN_EMPTY = "{{ value if value else '{}' }}"
# a person's own state as an availability: `online` while it says not_home
NOT_HOME_AVAILABLE = "{{ 'online' if value_json is defined and value_json.presence == 'not_home' else 'offline' }}"


def slug(text: str) -> str:
    """An HA object id / node id: [A-Za-z0-9_-] only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def friendly(camera_id: str) -> str:
    """`front_door` → `Front door`: what HA shows when the config gives no name."""
    words = re.sub(r"[_.-]+", " ", camera_id).strip()
    return words[:1].upper() + words[1:] if words else camera_id


def hub_name(thing: str) -> str:
    """`door-1` → `facewatchd door-1`; a thing that already says facewatchd (`facewatchd-demo`) is named alone."""
    return thing if "facewatchd" in thing.casefold() else f"facewatchd {thing}"


def camera_device(config: HomeAssistantConfig, thing: str, camera: str) -> dict[str, Any]:
    """One HA device per camera, shared by every plugin with entities for it (analytics' footfall too):
    named from `cameras.<id>.name`, under the hub, in an area only when one is configured (HA applies a
    suggested area to a device that has none, and never moves one that has an area)."""
    options, hub = config.cameras.get(camera, CameraOptions()), slug(f"facewatchd_{thing}")
    device = {"identifiers": [f"{hub}_{slug(camera)}"], "name": options.name or friendly(camera),
              "model": "facewatchd camera", "manufacturer": "facewatchd", "sw_version": __version__,
              "via_device": hub}
    return device | ({"suggested_area": options.area} if options.area else {})


def json_value(key: str, otherwise: str) -> str:
    """An HA template for one key of a JSON state message; the empty message that clears it (a forget) has none."""
    return f"{{{{ value_json.{key} if value_json is defined and value_json.{key} else '{otherwise}' }}}}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


class Discovery:
    """Topics and discovery configs; the plugin sets `config`, `thing` and `configuration_url` at its start."""

    config: HomeAssistantConfig
    thing: str
    configuration_url: str | None

    # -- topics ---------------------------------------------------------------------------------
    @property
    def node(self) -> str:
        return slug(f"facewatchd_{self.thing}")

    @property
    def base(self) -> str:
        return f"{self.config.base_topic}/{self.thing}"

    @property
    def availability_topic(self) -> str:
        return f"{self.base}/homeassistant/availability"

    @property
    def sync_topic(self) -> str:
        return f"{self.base}/homeassistant/sync"

    def camera_topic(self, camera: str, what: str) -> str:
        return f"{self.base}/{slug(camera)}/{what}"

    def person_topic(self, person_id: str, what: str) -> str:
        return f"{self.base}/persons/{slug(person_id)}/{what}"

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.config.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    # -- discovery payloads ---------------------------------------------------------------------
    def hub_device(self) -> dict[str, Any]:
        device = {"identifiers": [self.node], "name": hub_name(self.thing), "model": "facewatchd",
                  "manufacturer": "facewatchd", "sw_version": __version__}
        return device | ({"configuration_url": self.configuration_url} if self.configuration_url else {})

    def camera_device(self, camera: str) -> dict[str, Any]:
        return camera_device(self.config, self.thing, camera)

    @property
    def availability(self) -> list[dict[str, str]]:
        """This plugin's own availability and its connection's will (a dead connection cannot say the
        first): an entity is available while both are online."""
        return [{"topic": self.availability_topic}, {"topic": availability_topic(self.thing)}]

    def tracker_availability(self, person_id: str) -> list[dict[str, str]]:
        """A person's tracker outlives a clean stop, which sets it not_home first: it is available while the
        connection is up or while it says not_home. After a kill (the will) one that says home is unavailable:
        a dead daemon no longer vouches for it. Both are retained, so HA restarted meanwhile agrees."""
        return [{"topic": availability_topic(self.thing)},
                {"topic": self.person_topic(person_id, "attributes"), "value_template": NOT_HOME_AVAILABLE}]

    def _entity(self, unique_id: str, name: str | None, device: dict[str, Any],
                availability: list[dict[str, str]] | None = None, **keys: Any) -> dict[str, Any]:
        """An entity's discovery config; `availability` [] for one that is always available (while HA's own
        connection is up), default the plugin's and the connection's."""
        available = self.availability if availability is None else availability
        return {"name": name, "unique_id": unique_id, "device": device, "origin": ORIGIN,
                **({"availability": available, "availability_mode": "all"} if available else {}), **keys}

    def hub_configs(self) -> dict[str, dict[str, Any] | None]:
        # Not only device_trackers on the hub: HA 2024.3 deletes, at each start, a device that has nothing
        # else, and a camera's via_device needs the hub to exist before the camera does.
        return {self.config_topic("binary_sensor", "resolver_link"): self._entity(
            f"{self.node}_resolver_link", "Resolver link", self.hub_device(), device_class="connectivity",
            entity_category="diagnostic", state_topic=f"{self.base}/link", payload_on="ON", payload_off="OFF")}

    def camera_configs(self, camera: str) -> dict[str, dict[str, Any] | None]:
        """config topic → payload (None: remove the entity) for one camera's entities."""
        dev, cid = self.camera_device(camera), f"{self.node}_{slug(camera)}"
        configs: dict[str, dict[str, Any] | None] = {
            self.config_topic("sensor", f"{slug(camera)}_last_person"): self._entity(
                f"{cid}_last_person", "Last recognised person", dev, icon="mdi:account-check",
                state_topic=self.camera_topic(camera, "last_person"),
                # nobody (yet, or forgotten) is an empty message: HA's unknown, never the text 'None'
                value_template="{{ value if value else 'unknown' }}",
                json_attributes_topic=self.camera_topic(camera, "last_person/attributes"),
                json_attributes_template=NO_ATTRIBUTES_WHEN_EMPTY),
            self.config_topic("sensor", f"{slug(camera)}_people"): self._entity(
                f"{cid}_people", "People in view", dev, icon="mdi:account-group", state_class="measurement",
                state_topic=self.camera_topic(camera, "people")),
            self.config_topic("binary_sensor", f"{slug(camera)}_unknown_person"): self._entity(
                f"{cid}_unknown_person", "Unknown person present", dev, device_class="occupancy",
                state_topic=self.camera_topic(camera, "unknown_person"), payload_on="ON", payload_off="OFF"),
            self.config_topic("event", f"{slug(camera)}_person_recognised"): self._entity(
                f"{cid}_person_recognised", "Face", dev, icon="mdi:account-arrow-right",
                state_topic=self.camera_topic(camera, "recognised"),
                event_types=["recognised", "unknown", "presentation_attack"]),
        }
        image_topic = self.config_topic("image", f"{slug(camera)}_last_face")
        configs[image_topic] = self._entity(f"{cid}_last_face", "Last face", dev, content_type="image/jpeg",
                                            image_topic=self.camera_topic(camera, "face")) \
            if self.config.publish_face_crops else None  # turned off: remove an entity an earlier run made
        # available while the daemon is and the camera delivers frames (a live source being reopened is not)
        availability = [*self.availability, {"topic": self.camera_topic(camera, "availability")}]
        for payload in configs.values():
            if payload is not None:
                payload["availability"] = availability
        return configs

    def person_device(self, person_id: str, name: str) -> dict[str, Any]:
        return {"identifiers": [f"{self.node}_person_{slug(person_id)}"], "name": name,
                "model": "facewatchd person", "manufacturer": "facewatchd", "sw_version": __version__,
                "via_device": self.node}

    def person_config_topics(self, person_id: str) -> tuple[str, str]:
        """(device_tracker, sensor "Last camera") config topics of one person."""
        return (self.config_topic("device_tracker", f"person_{slug(person_id)}"),
                self.config_topic("sensor", f"person_{slug(person_id)}_camera"))

    def person_configs(self, person_id: str, name: str) -> dict[str, dict[str, Any]]:
        # Each person is a device of their own, so HA names the tracker as the person ("Alice", the device's
        # name: the entity has none), not "facewatchd door-1 Alice"; the device has a sensor too, as HA 2024.3
        # deletes at start a device with nothing but trackers. State and attributes come in one JSON message:
        # HA writes the tracker once per update, not twice.
        topic, uid = self.person_topic(person_id, "attributes"), f"{self.node}_person_{slug(person_id)}"
        device = self.person_device(person_id, name)
        tracker, camera = self.person_config_topics(person_id)
        # Not the daemon's own entities: a stopped daemon leaves them available, the tracker not_home and
        # "Last camera" the last camera (true still), while the hub's and the cameras' are unavailable.
        return {tracker: self._entity(uid, None, device, icon="mdi:account", source_type="router", state_topic=topic,
                                      value_template=json_value("presence", "not_home"), json_attributes_topic=topic,
                                      json_attributes_template=NO_ATTRIBUTES_WHEN_EMPTY,
                                      payload_home="home", payload_not_home="not_home",
                                      availability=self.tracker_availability(person_id), availability_mode="any"),
                camera: self._entity(f"{uid}_camera", "Last camera", device, icon="mdi:cctv", state_topic=topic,
                                     value_template=json_value("camera_name", "unknown"), availability=[])}

    def camera_name(self, camera: str) -> str:
        return str(self.camera_device(camera)["name"])
